"""lopt: learned optimizers, meta-trained over thousands of tasks (Metz et al. 2020)."""

__version__ = "0.1.0"

from lopt import tasks
from lopt.tasks import Task, TaskFamily, get_family
from lopt.train import TrainResult, train, train_many

__all__ = ["tasks", "Task", "TaskFamily", "get_family", "TrainResult", "train", "train_many",
           "__version__"]

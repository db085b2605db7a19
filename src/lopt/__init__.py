"""lopt: learned optimizers, meta-trained over thousands of tasks (Metz et al. 2020)."""

__version__ = "0.1.0"

from lopt import optimizers, tasks
from lopt.compile_cache import enable_compilation_cache
from lopt.pretrained import optimizer
from lopt.optimizers import Hierarchical, LearnedAdam, LearnedOptimizer, PerParameterMLP
from lopt.tasks import Task, TaskFamily, get_family
from lopt.train import TrainResult, train, train_many
from lopt.weights import WeightsError, load, save

__all__ = ["optimizers", "tasks", "enable_compilation_cache", "Hierarchical", "LearnedAdam", "LearnedOptimizer",
           "PerParameterMLP", "Task", "TaskFamily", "get_family", "TrainResult", "train",
           "train_many", "WeightsError", "load", "optimizer", "save", "__version__"]

"""Tasks: training problems, their families and the fixed task set."""

from lopt.tasks.base import SPLITS, Task, TaskFamily, TaskParts, TaskSpec
from lopt.tasks.families import OOD_FAMILIES, family_names, get_family

__all__ = ["SPLITS", "Task", "TaskFamily", "TaskParts", "TaskSpec", "OOD_FAMILIES",
           "family_names", "get_family"]

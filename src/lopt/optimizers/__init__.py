"""Learned optimizers (hierarchical LSTM+MLP, per-parameter MLP, learned Adam)."""

from lopt.optimizers.base import LearnedOptimizer
from lopt.optimizers.hierarchical import Hierarchical, HierarchicalState
from lopt.optimizers.learned_adam import LearnedAdam
from lopt.optimizers.mlp import MLPState, PerParameterMLP
from lopt.optimizers import per_element  # noqa: F401  (the chunked per-element pipeline)

__all__ = ["LearnedOptimizer", "Hierarchical", "HierarchicalState", "LearnedAdam", "MLPState",
           "PerParameterMLP"]

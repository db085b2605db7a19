"""Learned optimizers (hierarchical LSTM+MLP, per-parameter MLP, learned Adam) and the
step-size adaptation that can wrap them (or any optax rule)."""

from lopt.optimizers.base import LearnedOptimizer
from lopt.optimizers.hierarchical import Hierarchical, HierarchicalState
from lopt.optimizers.learned_adam import LearnedAdam
from lopt.optimizers.mlp import MLPState, PerParameterMLP
from lopt.optimizers.step_adaptation import (StepAdaptationState, adapt_step_size,
                                             early_rate_schedule)
from lopt.optimizers import per_element  # noqa: F401  (the chunked per-element pipeline)

__all__ = ["LearnedOptimizer", "Hierarchical", "HierarchicalState", "LearnedAdam", "MLPState",
           "PerParameterMLP", "StepAdaptationState", "adapt_step_size", "early_rate_schedule"]

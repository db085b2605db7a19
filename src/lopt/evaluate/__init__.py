"""Evaluation: baselines, their store, scores and plots."""

from lopt.evaluate.baselines import (
    ADAM_LEARNING_RATES, BASELINES, NADAMW_SETTINGS, SGDM_LEARNING_RATES, run_baselines, run_sweep,
    summarise)
from lopt.evaluate.fill import fill_store, global_learning_rate
from lopt.evaluate.intervals import (mean_difference_interval, task_intervals,
                                     win_fraction_interval)
from lopt.evaluate.metrics import downsample, normalise, steps_to_reach
from lopt.evaluate.store import BaselineStore, best_loss, initial_loss

__all__ = ["ADAM_LEARNING_RATES", "BASELINES", "NADAMW_SETTINGS", "SGDM_LEARNING_RATES",
           "run_baselines", "run_sweep", "summarise", "fill_store", "global_learning_rate",
           "downsample", "normalise", "steps_to_reach", "BaselineStore", "best_loss",
           "initial_loss", "mean_difference_interval", "task_intervals", "win_fraction_interval"]

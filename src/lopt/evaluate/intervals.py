"""How sure a benchmark's headline numbers are: 95% intervals over the sampled tasks.

A benchmark scores a sample of tasks, so its means and win fractions would move with another
sample. The intervals treat the tasks as the random draw (the runs themselves are seeded):
a bootstrap over tasks for the mean difference to a baseline, paired per task, and Wilson's
score interval for a win fraction.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95


def mean_difference_interval(ours, baseline, *, level: float = LEVEL, resamples: int = 10_000,
                             seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval (BCa, percentile where BCa is undefined) of ``mean(ours - baseline)``
    over tasks; NaN for fewer than two tasks."""
    diff = np.asarray(ours, np.float64) - np.asarray(baseline, np.float64)
    if diff.ndim != 1:
        raise ValueError(f"expected one score per task, got shape {diff.shape}")
    if diff.size < 2:
        return float("nan"), float("nan")
    if np.all(diff == diff[0]):  # no spread to resample
        return float(diff[0]), float(diff[0])
    for method in ("BCa", "percentile"):
        with np.errstate(all="ignore"):
            ci = stats.bootstrap((diff,), np.mean, confidence_level=level, n_resamples=resamples,
                                 method=method, rng=np.random.default_rng(seed)
                                 ).confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            break
    return float(ci.low), float(ci.high)


def win_fraction_interval(wins: int, tasks: int, *, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a win fraction ``wins / tasks``; NaN for no tasks."""
    if not 0 <= wins <= tasks:
        raise ValueError(f"need 0 <= wins <= tasks, got {wins} of {tasks}")
    if tasks == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(wins), int(tasks)).proportion_ci(confidence_level=level,
                                                               method="wilson")
    return float(ci.low), float(ci.high)


def task_intervals(scores: Sequence[dict[str, Any]], *, level: float = LEVEL) -> dict[str, Any]:
    """Intervals for one mode's per-task scores (``benchmark.score`` rows): the mean
    difference to tuned and to global Adam, and the win fractions against each."""
    out: dict[str, Any] = {"level": level, "tasks": len(scores)}
    ours = [s["normalised"] for s in scores]
    for name in ("adam_tuned", "adam_global"):
        short = name.removeprefix("adam_")
        out[f"difference_{short}"] = mean_difference_interval(
            ours, [s[name] for s in scores], level=level)
        out[f"wins_{short}"] = win_fraction_interval(
            sum(bool(s[f"win_{short}"]) for s in scores), len(scores), level=level)
    return out

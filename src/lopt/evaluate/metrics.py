"""Scores of training curves: downsampling, run summaries and normalised loss.

Normalised loss (DESIGN.md): 0 is the best loss any baseline reached on the task, 1 is the loss at
initialisation. Values above 1 (worse than not training) and non-finite values (diverged runs)
count as 1, so that one blown-up run cannot dominate an average over tasks.
"""

from __future__ import annotations

import numpy as np


def downsample(curve, num_points: int = 50) -> np.ndarray:
    """Means of ``curve`` over ``num_points`` equal windows (NaN-aware; all-NaN windows stay NaN)."""
    curve = np.asarray(curve, np.float64)
    if curve.size <= num_points:
        return curve.copy()
    edges = np.linspace(0, curve.size, num_points + 1).astype(int)
    out = np.empty(num_points)
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        window = curve[a:b]
        finite = window[np.isfinite(window)]
        out[i] = finite.mean() if finite.size == window.size else np.nan
    return out


def window_steps(num_steps: int, num_points: int = 50) -> np.ndarray:
    """Last step of each window used by ``downsample``."""
    if num_steps <= num_points:
        return np.arange(1, num_steps + 1)
    return np.linspace(0, num_steps, num_points + 1).astype(int)[1:]


def normalise(loss, initial: float, best: float) -> np.ndarray:
    """Maps losses to [.., 1]: ``(loss - best) / (initial - best)``; non-finite or worse than
    initial -> 1."""
    loss = np.asarray(loss, np.float64)
    scale = max(initial - best, 1e-12)
    out = (loss - best) / scale
    return np.where(np.isfinite(out), np.minimum(out, 1.0), 1.0)


def steps_to_reach(curve, target: float, steps=None) -> float:
    """First step at which ``curve`` is at or below ``target`` (``inf`` if never)."""
    curve = np.asarray(curve, np.float64)
    steps = np.arange(1, curve.size + 1) if steps is None else np.asarray(steps)
    hit = np.nonzero(np.isfinite(curve) & (curve <= target))[0]
    return float(steps[hit[0]]) if hit.size else float("inf")

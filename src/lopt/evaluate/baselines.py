"""Hand-designed baselines: Adam tuned per task, Adam with one global learning rate, SGD with
momentum and a fixed list of NAdamW settings.

Every sweep is a single ``train_many`` call, so tuning Adam's learning rate over 14 values costs
one vmapped run, not fourteen. A run is summarised into plain numbers and downsampled curves
(``summarise``), which is what the baseline store keeps.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.evaluate.metrics import downsample, window_steps
from lopt.tasks.base import Task
from lopt.train import TrainResult, train_many

#: 14 log-spaced Adam learning rates, 1e-5 to 1.
ADAM_LEARNING_RATES = tuple(float(x) for x in np.logspace(-5, 0, 14))
#: 14 log-spaced SGD learning rates (momentum 0.9), 1e-4 to 10.
SGDM_LEARNING_RATES = tuple(float(x) for x in np.logspace(-4, 1, 14))
#: A fixed list of NAdamW settings (cosine decay after a 5% warm-up), tried on every task.
NADAMW_SETTINGS = (
    {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "weight_decay": 1e-4},
    {"learning_rate": 3e-3, "b1": 0.9, "b2": 0.999, "weight_decay": 1e-4},
    {"learning_rate": 1e-2, "b1": 0.9, "b2": 0.99, "weight_decay": 1e-3},
    {"learning_rate": 3e-4, "b1": 0.9, "b2": 0.999, "weight_decay": 1e-2},
    {"learning_rate": 3e-3, "b1": 0.8, "b2": 0.99, "weight_decay": 1e-2},
    {"learning_rate": 3e-2, "b1": 0.9, "b2": 0.999, "weight_decay": 1e-4},
)

BASELINES = ("adam_tuned", "sgdm_tuned", "nadamw_list")
CURVE_POINTS = 50


def adam(hp) -> optax.GradientTransformation:
    return optax.adam(hp["learning_rate"])


def sgd_momentum(hp) -> optax.GradientTransformation:
    return optax.sgd(hp["learning_rate"], momentum=0.9)


@functools.lru_cache(maxsize=None)
def nadamw(num_steps: int):
    """NAdamW with warm-up and cosine decay over ``num_steps`` (one cached factory per length)."""

    warmup = max(1, num_steps // 20)

    def make(hp):
        def schedule(count):
            count = count.astype(jnp.float32)
            ramp = count / warmup
            progress = jnp.clip((count - warmup) / max(1, num_steps - warmup), 0.0, 1.0)
            cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
            return hp["learning_rate"] * jnp.where(count < warmup, ramp, cosine)

        return optax.nadamw(schedule, b1=hp["b1"], b2=hp["b2"],
                            weight_decay=hp["weight_decay"])

    return make


def _sweep_hparams(name: str) -> dict[str, np.ndarray]:
    if name == "adam_tuned":
        return {"learning_rate": np.asarray(ADAM_LEARNING_RATES, np.float32)}
    if name == "sgdm_tuned":
        return {"learning_rate": np.asarray(SGDM_LEARNING_RATES, np.float32)}
    if name == "nadamw_list":
        return {k: np.asarray([s[k] for s in NADAMW_SETTINGS], np.float32)
                for k in NADAMW_SETTINGS[0]}
    raise ValueError(f"unknown baseline {name!r}; allowed: {', '.join(BASELINES)}")


def _factory(name: str, num_steps: int):
    return {"adam_tuned": adam, "sgdm_tuned": sgd_momentum, "nadamw_list": nadamw(num_steps)}[name]


def run_sweep(task: Task, name: str, num_steps: int, key: jax.Array) -> dict[str, Any]:
    """Runs every setting of baseline ``name`` on ``task`` in one vmapped call and summarises.

    All settings share one initialisation and one minibatch sequence (the same ``key``), so
    their differences come from the optimizer alone. The selected setting is the one with the
    lowest training loss averaged over the run (the score the learned optimizers are judged on).
    """
    hps = _sweep_hparams(name)
    n = len(next(iter(hps.values())))
    keys = jax.numpy.stack([key] * n)
    result = jax.device_get(train_many(task, _factory(name, num_steps), num_steps, keys,
                                       opt_hparams=hps))
    runs = [summarise(jax.tree_util.tree_map(lambda a, i=i: a[i], result)) for i in range(n)]
    mean = np.array([r["mean_loss"] for r in runs])
    best = int(np.argmin(np.where(np.isfinite(mean), mean, np.inf)))
    chosen = dict(runs[best])
    chosen["hparams"] = {k: float(v[best]) for k, v in hps.items()}
    chosen["sweep"] = {
        "hparams": {k: v.tolist() for k, v in hps.items()},
        "mean_loss": [r["mean_loss"] for r in runs],
        "final_loss": [r["final_loss"] for r in runs],
        "best_loss": [r["best_loss"] for r in runs],
        "diverged": [r["diverged"] for r in runs],
        "curves": [r["curve"]["train"] for r in runs],
    }
    return chosen


def summarise(result: TrainResult, *, num_points: int = CURVE_POINTS) -> dict[str, Any]:
    """Plain-number summary of one run: losses and downsampled curves.

    ``initial_loss``/``final_loss``/``best_loss`` are measured on the train split's fixed
    evaluation batch; ``mean_loss`` is the minibatch training loss averaged over all steps
    (non-finite if the run diverged).
    """
    train = np.asarray(result.train_loss, np.float64)
    evals = {s: np.asarray(v, np.float64) for s, v in result.eval_loss.items()}
    reference = evals.get("train", downsample(train, num_points))
    finite = reference[np.isfinite(reference)]
    return {
        "initial_loss": _num(reference[0]),
        "final_loss": _num(reference[-1]),
        "best_loss": _num(finite.min()) if finite.size else float("nan"),
        "mean_loss": _num(train.mean()),
        "diverged": bool(result.diverged),
        "diverged_at": int(result.diverged_at),
        "curve": {"steps": window_steps(train.size, num_points).tolist(),
                  "train": [_num(x) for x in downsample(train, num_points)]},
        "eval": {"steps": np.asarray(result.eval_steps).tolist(),
                 **{s: [_num(x) for x in v] for s, v in evals.items()}},
    }


def _num(x) -> float:
    """A plain Python float (NaN and inf are kept; the store's JSON writes them as NaN/Infinity)."""
    return float(x)


def run_baselines(task: Task, num_steps: int, key: jax.Array,
                  names=BASELINES) -> dict[str, dict[str, Any]]:
    """All baselines on one task."""
    return {name: run_sweep(task, name, num_steps, key) for name in names}

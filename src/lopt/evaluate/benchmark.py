"""Benchmarking a learned optimizer against the stored baselines on held-out tasks.

Every task is trained with the learned optimizer from the same initialisation and minibatch
sequence as its stored baselines (same seed), in two modes: fed the validation loss every 10
steps (as in the paper) and fed the training loss alone (``value=``, as most optax users call it).
Scores per task: normalised loss (training loss averaged over the run; 0 = best baseline,
1 = initial loss), wins against per-task tuned Adam and against Adam at the best single global
learning rate, and the speed-up (steps tuned Adam needs to reach the learned optimizer's final
loss, over the steps the learned optimizer needed).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lopt.evaluate.baselines import ADAM_LEARNING_RATES, summarise
from lopt.evaluate.fill import fill_store, global_learning_rate
from lopt.evaluate.metrics import normalise, steps_to_reach
from lopt.evaluate.store import BaselineStore, best_loss, initial_loss
from lopt.progress import progress_bar
from lopt.tasks.base import Task

#: Benchmark modes: how often the validation loss is fed (None: never, ``value=`` only).
MODES = {"valid": 10, "train_only": None}


def run_learned(tasks: Sequence[Task], learned, theta, num_steps: int, *, seed: int = 0,
                modes: Sequence[str] = tuple(MODES)) -> dict[str, list[dict[str, Any]]]:
    """Trains every task (one shape bucket) with ``learned`` at ``theta`` in every mode, all in
    one vmapped run; returns per mode a summary per task in the baseline store's format.

    A mode without validation losses is run as the validation mode with the loss masked to NaN,
    which the learned optimizers treat exactly as an absent ``valid_loss`` (one program for both).
    """
    import optax

    from lopt.train import train_many

    every = [MODES[m] for m in modes]
    n, k = len(tasks), len(modes)
    keys = jnp.stack([jax.random.key(seed)] * (n * k))  # the baselines' init and minibatches
    feed = jnp.repeat(jnp.asarray([e is not None for e in every]), n)
    thetas = jax.tree_util.tree_map(lambda a: jnp.stack([jnp.asarray(a)] * (n * k)), theta)

    def make(hp):
        inner = learned.optimizer(hp["theta"])

        def update(grads, state, params=None, *, valid_loss=None, **extra):
            if valid_loss is not None:
                valid_loss = jnp.where(hp["feed"], valid_loss, jnp.nan)
            return inner.update(grads, state, params, valid_loss=valid_loss, **extra)

        return optax.GradientTransformationExtraArgs(inner.init, update)

    valid_every = min((e for e in every if e is not None), default=None)
    if len({e for e in every if e is not None}) > 1:
        raise ValueError(f"modes {list(modes)} feed validation losses at different intervals")
    result = jax.device_get(train_many(list(tasks) * k, make, num_steps, keys,
                                       opt_hparams={"theta": thetas, "feed": feed},
                                       valid_every=valid_every))
    runs = [summarise(jax.tree_util.tree_map(lambda a, i=i: a[i], result)) for i in range(n * k)]
    return {m: runs[j * n:(j + 1) * n] for j, m in enumerate(modes)}


def score(record: dict[str, Any], ours: dict[str, Any], global_index: int) -> dict[str, Any]:
    """Per-task numbers of one run of the learned optimizer against one store record."""
    init, best = initial_loss(record), best_loss(record)
    tuned = record["baselines"]["adam_tuned"]
    sweep = tuned["sweep"]
    ours_norm = float(normalise(ours["mean_loss"], init, best))
    tuned_norm = float(normalise(tuned["mean_loss"], init, best))
    global_norm = float(normalise(sweep["mean_loss"][global_index], init, best))
    steps = np.asarray(ours["curve"]["steps"])
    final = ours["curve"]["train"][-1]
    ours_steps = steps_to_reach(ours["curve"]["train"], final, steps)
    adam_steps = steps_to_reach(tuned["curve"]["train"], final, tuned["curve"]["steps"])
    return {
        "task_id": record["task_id"], "family": record["family"],
        "normalised": ours_norm, "adam_tuned": tuned_norm, "adam_global": global_norm,
        "win_tuned": ours_norm < tuned_norm, "win_global": ours_norm < global_norm,
        "speedup": adam_steps / ours_steps if np.isfinite(ours_steps) else 0.0,
        "diverged": bool(ours["diverged"] or not np.isfinite(ours["mean_loss"])),
        "mean_loss": ours["mean_loss"], "final_loss": ours["final_loss"],
        "adam_tuned_lr": tuned["hparams"]["learning_rate"],
        "curve": ours["curve"],
    }


def summary(scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregates over tasks: means, win fractions, median speed-up, divergences."""
    if not scores:
        return {"tasks": 0}
    col = lambda k: np.asarray([s[k] for s in scores], np.float64)  # noqa: E731
    return {
        "tasks": len(scores),
        "mean_normalised": float(col("normalised").mean()),
        "adam_tuned_mean_normalised": float(col("adam_tuned").mean()),
        "adam_global_mean_normalised": float(col("adam_global").mean()),
        "win_fraction_tuned": float(col("win_tuned").mean()),
        "win_fraction_global": float(col("win_global").mean()),
        "median_speedup": float(np.median(col("speedup"))),
        "diverged_fraction": float(col("diverged").mean()),
    }


def benchmark(tasks: Sequence[Task], learned, theta, *, num_steps: int, store: BaselineStore,
              seed: int = 0, modes: Sequence[str] = tuple(MODES),
              progress: bool = True) -> dict[str, Any]:
    """Runs the benchmark; baselines missing from ``store`` are run (and stored) first.

    The global Adam learning rate is the one best on average over these very tasks, which
    favours Adam (it is chosen on the test tasks themselves).
    """
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown benchmark mode {mode!r}; allowed: {', '.join(MODES)}")
    if not tasks:
        raise ValueError("no tasks to benchmark")
    records = fill_store(tasks, store, names=["adam_tuned"], seed=seed, progress=progress)
    lr, _ = global_learning_rate(records)
    global_index = int(np.argmin(np.abs(np.log(ADAM_LEARNING_RATES) - np.log(lr))))
    by_id = {t.id: r for t, r in zip(tasks, records)}
    buckets: dict[Any, list[Task]] = defaultdict(list)
    for t in tasks:
        buckets[t.bucket].append(t)
    out: dict[str, Any] = {"num_steps": num_steps, "seed": seed, "adam_global_lr": lr,
                           "modes": {}}
    with progress_bar(progress) as bar:
        job = bar.add_task("learned optimizer", total=len(tasks))
        scores: dict[str, list] = {m: [] for m in modes}
        for group in buckets.values():
            bar.update(job, description=f"{group[0].family} ({len(group)} tasks)")
            runs = run_learned(group, learned, theta, num_steps, seed=seed, modes=modes)
            for mode in modes:
                scores[mode] += [score(by_id[t.id], r, global_index)
                                 for t, r in zip(group, runs[mode])]
            bar.advance(job, len(group))
    order = {t.id: i for i, t in enumerate(tasks)}
    for mode in modes:
        rows = sorted(scores[mode], key=lambda s: order[s["task_id"]])
        out["modes"][mode] = {"summary": summary(rows), "by_family": _by_family(rows),
                              "tasks": rows}
    out["baselines"] = {t.id: _baseline_curves(by_id[t.id], global_index) for t in tasks}
    return out


def _by_family(scores):
    groups = defaultdict(list)
    for s in scores:
        groups[s["family"]].append(s)
    return {f: summary(v) for f, v in groups.items()}


def _baseline_curves(record, global_index):
    tuned = record["baselines"]["adam_tuned"]
    return {"steps": tuned["curve"]["steps"], "adam_tuned": tuned["curve"]["train"],
            "adam_global": tuned["sweep"]["curves"][global_index],
            "initial_loss": initial_loss(record), "best_loss": best_loss(record)}


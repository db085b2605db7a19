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
from lopt.tasks.base import Task

#: Benchmark modes: how often the validation loss is fed (None: never, ``value=`` only).
MODES = {"valid": 10, "train_only": None}


def run_learned(tasks: Sequence[Task], learned, theta, num_steps: int, *, seed: int = 0,
                valid_every: int | None = 10) -> list[dict[str, Any]]:
    """Trains every task (one shape bucket) with ``learned`` at ``theta`` in one vmapped run;
    returns a summary per task in the baseline store's format."""
    from lopt.train import train_many

    n = len(tasks)
    keys = jnp.stack([jax.random.key(seed)] * n)  # the baselines' init and minibatches
    thetas = jax.tree_util.tree_map(lambda a: jnp.stack([jnp.asarray(a)] * n), theta)
    result = jax.device_get(train_many(list(tasks), learned.optimizer, num_steps, keys,
                                       opt_hparams=thetas, valid_every=valid_every))
    return [summarise(jax.tree_util.tree_map(lambda a, i=i: a[i], result)) for i in range(n)]


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
    with _progress(progress) as bar:
        job = bar.add_task("learned optimizer", total=len(tasks) * len(modes))
        for mode in modes:
            scores = []
            for group in buckets.values():
                bar.update(job, description=f"{mode}: {group[0].family} ({len(group)} tasks)")
                runs = run_learned(group, learned, theta, num_steps, seed=seed,
                                   valid_every=MODES[mode])
                scores += [score(by_id[t.id], r, global_index) for t, r in zip(group, runs)]
                bar.advance(job, len(group))
            order = {t.id: i for i, t in enumerate(tasks)}
            scores.sort(key=lambda s: order[s["task_id"]])
            out["modes"][mode] = {"summary": summary(scores), "by_family": _by_family(scores),
                                  "tasks": scores}
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


def _progress(enabled: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)

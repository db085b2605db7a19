"""Filling the baseline store over many tasks, and the one global Adam learning rate."""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from lopt.evaluate.baselines import ADAM_LEARNING_RATES, BASELINES, run_sweep
from lopt.evaluate.metrics import normalise
from lopt.evaluate.store import BaselineStore, best_loss, initial_loss
from lopt.progress import progress_bar
from lopt.tasks.base import Task


def fill_store(tasks: Sequence[Task], store: BaselineStore, *, names=BASELINES, seed: int = 0,
               progress: bool = True) -> list[dict]:
    """Runs every missing baseline of every task and stores it; returns the tasks' records.

    Tasks are processed bucket by bucket so each compiled sweep is reused. Each task is stored
    as soon as it is done: a killed run loses at most the task in progress.
    """
    for name in names:
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; allowed: {', '.join(BASELINES)}")
    todo = [(t, store.missing(t, names)) for t in tasks]
    todo = [(t, m) for t, m in todo if m]
    todo.sort(key=lambda tm: str(tm[0].bucket))
    key = jax.random.key(seed)
    with progress_bar(progress) as bar:
        job = bar.add_task("baselines", total=sum(len(m) for _, m in todo))
        for task, missing in todo:
            for name in missing:
                bar.update(job, description=f"{name} on {task.id}")
                store.put(task, {name: run_sweep(task, name, store.num_steps, key)}, seed=seed)
                bar.advance(job)
    return [store.get(t) for t in tasks]



def global_learning_rate(records: Sequence[dict]) -> tuple[float, np.ndarray]:
    """The single Adam learning rate with the lowest mean normalised loss over ``records``.

    Returns the rate and, for each record, the run-averaged normalised loss at that rate.
    """
    scores = []
    for record in records:
        sweep = record["baselines"]["adam_tuned"]["sweep"]
        init, best = initial_loss(record), best_loss(record)
        scores.append(normalise(sweep["mean_loss"], init, best))
    scores = np.asarray(scores)
    index = int(np.argmin(scores.mean(axis=0)))
    return ADAM_LEARNING_RATES[index], scores[:, index]

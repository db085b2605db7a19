"""The task set: a fixed, seeded list of task configurations and its deterministic split.

``task_set()`` samples ``FAMILY_COUNTS[name]`` configurations from every family with a key
derived from ``TASK_SET_SEED`` and the family's name, so the list (and every task id, which is a
hash of the family and configuration) is the same on every machine. In-distribution tasks are
split by a hash of their id into ``meta_train`` (80%) and ``held_out`` (20%); the families in
``OOD_FAMILIES`` form the ``ood`` group that meta-training never sees.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import zlib

import jax

from lopt.tasks.base import Task
from lopt.tasks.families import OOD_FAMILIES, family_names, get_family

TASK_SET_VERSION = 1
TASK_SET_SEED = 20200923
GROUPS = ("meta_train", "held_out", "ood")
HELD_OUT_PERCENT = 20
#: Held-out tasks are split once more: ``selection`` (choosing among meta-trained candidates)
#: and ``test`` (the final report only).
SUBSETS = ("selection", "test")
SELECTION_PERCENT = 30

#: Configurations sampled per family.
FAMILY_COUNTS = {
    "mlp": 200, "conv2d": 80, "conv1d": 60, "autoencoder": 80, "vae": 60, "rnn_lm": 80,
    "regression": 120, "quadratic": 120, "test_function": 120,
    "transformer_lm": 50, "flow": 50,
}


def group_of(task_id: str, family: str) -> str:
    """The group of a task: fixed by its family and a hash of its id."""
    if family in OOD_FAMILIES:
        return "ood"
    bucket = int(hashlib.sha256(task_id.encode()).hexdigest(), 16) % 100
    return "held_out" if bucket < HELD_OUT_PERCENT else "meta_train"


def subset_of(task_id: str) -> str:
    """``selection`` or ``test`` for a held-out task: a second, independent hash of its id."""
    bucket = int(hashlib.sha256(f"subset:{task_id}".encode()).hexdigest(), 16) % 100
    return "selection" if bucket < SELECTION_PERCENT else "test"


def _family_key(name: str) -> jax.Array:
    return jax.random.fold_in(jax.random.key(TASK_SET_SEED), zlib.crc32(name.encode()))


@functools.lru_cache(maxsize=None)
def _family_tasks(name: str) -> tuple[Task, ...]:
    from lopt.tasks.base import key_to_rng

    family = get_family(name)
    rng = key_to_rng(_family_key(name))
    tasks, seen = [], set()
    for _ in range(20 * FAMILY_COUNTS[name]):
        if len(tasks) == FAMILY_COUNTS[name]:
            break
        task = family.task(family.sample_config(rng))
        if task.id in seen:
            continue
        seen.add(task.id)
        task.group = group_of(task.id, name)
        tasks.append(task)
    return tuple(tasks)


def task_set(group: str | None = None, *, families=None, data_dir=None,
             subset: str | None = None) -> list[Task]:
    """The fixed task set, optionally only one ``group`` and/or some ``families``.

    ``subset`` (``"selection"`` or ``"test"``) keeps only that part of the held-out group.

    With ``data_dir`` (or ``$LOPT_DATA_DIR``) naming a folder with MNIST, Fashion-MNIST or
    CIFAR-10, tasks on those data sets are appended (``real_data_tasks``).
    """
    import os

    from lopt.tasks.loaders import DATA_DIR_ENV

    if group is not None and group not in GROUPS:
        raise ValueError(f"unknown task group {group!r}; allowed: {', '.join(GROUPS)}")
    if subset is not None:
        if subset not in SUBSETS:
            raise ValueError(f"unknown held-out subset {subset!r}; allowed: {', '.join(SUBSETS)}")
        if group != "held_out":
            raise ValueError(f"subset={subset!r} splits the held_out group; got group={group!r}")
    names = family_names() if families is None else tuple(families)
    for name in names:
        get_family(name)  # raises a clear error for unknown names
    tasks = [t for name in names for t in _family_tasks(name)]
    if data_dir is not None or os.environ.get(DATA_DIR_ENV):
        tasks += [t for t in real_data_tasks(data_dir) if t.family in names]
    return [t for t in tasks if (group is None or t.group == group)
            and (subset is None or subset_of(t.id) == subset)]


#: Tasks per family and real data set, added when a data folder is given.
REAL_DATA_COUNTS = {"mlp": 20, "conv2d": 20}


def real_data_tasks(data_dir=None) -> list[Task]:
    """Tasks on the real data sets found in ``data_dir`` (or ``$LOPT_DATA_DIR``); the
    configurations are seeded like the rest of the task set, so ids are stable."""
    from lopt.tasks import loaders
    from lopt.tasks.base import key_to_rng

    loaders.resolve_data_dir(data_dir)  # a clear error if no folder is set or it is missing
    tasks = []
    for name, count in REAL_DATA_COUNTS.items():
        family = get_family(name)
        for dataset in loaders.available(data_dir):
            rng = key_to_rng(jax.random.fold_in(_family_key(name), zlib.crc32(dataset.encode())))
            for _ in range(count):
                config = {**family.sample_config(rng), "dataset": dataset}
                task = family.task(config, data_dir=data_dir)
                task.group = group_of(task.id, name)
                tasks.append(task)
    return tasks


def get_task(task_id: str) -> Task:
    """The task of the task set with id ``task_id`` (``family/hash``)."""
    family = task_id.split("/", 1)[0]
    if family not in family_names():
        raise ValueError(f"unknown task id {task_id!r}: no family {family!r}; "
                         f"families: {', '.join(family_names())}")
    by_id = {t.id: t for t in _family_tasks(family)}
    if task_id not in by_id:
        close = difflib.get_close_matches(task_id, by_id, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown task id {task_id!r} in family {family!r}{hint}")
    return by_id[task_id]


def sample_tasks(group: str, per_family: int = 1, *, families=None,
                 subset: str | None = None) -> list[Task]:
    """A small, fixed, representative sample: the first ``per_family`` tasks of each family in
    ``group`` (task-set order, which is random but fixed)."""
    out = []
    for name in family_names() if families is None else families:
        out += task_set(group, families=[name], subset=subset)[:per_family]
    return out

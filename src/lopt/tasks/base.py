"""Tasks and task families: the training problems learned optimizers are trained and tested on.

A task splits into three parts so that many tasks can share one compiled program:

* a ``TaskSpec`` — hashable, static: architecture, batch size, everything that changes shapes.
  Tasks with equal specs and equal data shapes form a *shape bucket* and can be ``vmap``-ed.
* ``hparams`` — a dict of scalar arrays (init scale, label noise, training-set size ...): traced
  values, so changing them never recompiles.
* ``data`` — one pytree of arrays per split (``train``, ``valid``, ``outer_valid``, ``test``).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import hashlib
import json
import weakref
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

SPLITS = ("train", "valid", "outer_valid", "test")

Params = Any
Batch = Any
HParams = Mapping[str, jax.Array]


class TaskSpec(abc.ABC):
    """Static, hashable description of a task's computation (its shape bucket).

    Subclasses are frozen dataclasses. ``hp`` is the task's dict of traced hyperparameters and
    ``data`` one split's pytree of arrays (leading axis = examples), or ``None`` for tasks
    without data.
    """

    batch_size: int

    @abc.abstractmethod
    def init(self, hp: HParams, key: jax.Array) -> Params:
        """Samples initial parameters."""

    @abc.abstractmethod
    def loss(self, hp: HParams, params: Params, batch: Batch, key: jax.Array) -> jax.Array:
        """Scalar loss of ``params`` on ``batch``; ``key`` drives any noise (dropout, sampling)."""

    def sample_batch(self, hp: HParams, data: Any, key: jax.Array, *, limit=None) -> Batch:
        """A minibatch of ``batch_size`` examples drawn uniformly from the first ``limit`` rows."""
        if data is None:
            return {}
        n = jax.tree_util.tree_leaves(data)[0].shape[0]
        high = n if limit is None else limit
        idx = jax.random.randint(key, (self.batch_size,), 0, high)
        return jax.tree_util.tree_map(lambda a: a[idx], data)

    def eval_batch(self, hp: HParams, data: Any, size: int, *, limit=None) -> Batch:
        """A fixed batch for evaluation: the first ``size`` examples of the split (cycling
        through the first ``limit`` rows when the task trains on a subset)."""
        if data is None:
            return {}
        n = jax.tree_util.tree_leaves(data)[0].shape[0]
        if limit is None:
            return jax.tree_util.tree_map(lambda a: a[:size], data)
        idx = jnp.arange(min(size, n)) % limit
        return jax.tree_util.tree_map(lambda a: a[idx], data)


@dataclasses.dataclass(frozen=True)
class TaskParts:
    """What a family builds from a configuration."""

    spec: TaskSpec
    hparams: dict
    data: dict  # split name -> pytree of arrays (or None)


@dataclasses.dataclass(eq=False)
class Task:
    """One training problem: ``init(key)``, ``loss(params, batch, key)`` and four data splits.

    Tasks are built lazily: the data and arrays are materialised on first use, so a task set of
    thousands of tasks costs nothing until a task is trained.
    """

    id: str
    family: str
    config: Mapping[str, Any]
    _build: Callable[[Mapping[str, Any]], TaskParts] = dataclasses.field(repr=False)
    #: Which part of the task set the task belongs to: "meta_train", "held_out", "ood" or "".
    group: str = ""

    @functools.cached_property
    def _parts(self) -> TaskParts:
        with jax.ensure_compile_time_eval():
            return self._materialise()

    def _materialise(self) -> TaskParts:
        parts = self._build(self.config)
        hp = {k: jnp.asarray(v, jnp.float32) for k, v in parts.hparams.items()}
        data = {s: (None if d is None else jax.tree_util.tree_map(_to_device, d))
                for s, d in parts.data.items()}
        missing = set(SPLITS) - set(data)
        if missing:
            raise ValueError(f"task {self.id!r}: family built no data for splits {sorted(missing)}")
        return TaskParts(parts.spec, hp, data)

    @property
    def spec(self) -> TaskSpec:
        return self._parts.spec

    @property
    def hparams(self) -> dict:
        return self._parts.hparams

    @property
    def data(self) -> dict:
        return self._parts.data

    @property
    def batch_size(self) -> int:
        return self.spec.batch_size

    @property
    def bucket(self) -> tuple:
        """Hashable shape bucket: tasks with equal buckets can be vmapped together."""
        shapes = jax.tree_util.tree_map(lambda a: (a.shape, str(a.dtype)),
                                        {"data": self.data, "hparams": self.hparams})
        return (self.spec, json.dumps(shapes, sort_keys=True, default=str))

    def init(self, key: jax.Array) -> Params:
        return self.spec.init(self.hparams, key)

    def loss(self, params: Params, batch: Batch, key: jax.Array) -> jax.Array:
        return self.spec.loss(self.hparams, params, batch, key)

    def batch(self, split: str, key: jax.Array) -> Batch:
        """Samples a minibatch from ``split``."""
        _check_split(split)
        return sample_split(self.spec, self.hparams, self.data, split, key)

    def eval_batch(self, split: str, size: int = 512) -> Batch:
        _check_split(split)
        return eval_split(self.spec, self.hparams, self.data, split, size)

    def num_params(self) -> int:
        spec, hp = self.spec, self.hparams  # materialise outside the trace
        shapes = jax.eval_shape(lambda k: spec.init(hp, k), jax.random.key(0))
        return int(sum(np.prod(s.shape) for s in jax.tree_util.tree_leaves(shapes)))

    def fingerprint(self) -> str:
        """SHA-256 of the task's identity (family and configuration); equal on every machine."""
        return config_hash(self.family, self.config)


_DEVICE_CACHE: dict[int, tuple] = {}


def _to_device(array):
    """Device copy of a NumPy array, shared by every task that uses the same array so that tasks
    of one data set vmap over a single copy. Entries die with their NumPy array (no leak when
    families generate fresh data per task)."""
    if not isinstance(array, np.ndarray):
        return jnp.asarray(array)
    hit = _DEVICE_CACHE.get(id(array))
    if hit is None or hit[0]() is not array:
        hit = (weakref.ref(array), jnp.asarray(array))
        _DEVICE_CACHE[id(array)] = hit
        weakref.finalize(array, _DEVICE_CACHE.pop, id(array), None)
    return hit[1]


def _limit(hp, split):
    if split == "train" and "n_train" in hp:
        return hp["n_train"].astype(jnp.int32)
    return None


def sample_split(spec: TaskSpec, hp, data, split: str, key):
    """Draws a minibatch from one split; the train split honours ``hp['n_train']`` if present."""
    return spec.sample_batch(hp, data[split], key, limit=_limit(hp, split))


def eval_split(spec: TaskSpec, hp, data, split: str, size: int):
    """The fixed evaluation batch of one split (of the training subset for ``train``)."""
    return spec.eval_batch(hp, data[split], size, limit=_limit(hp, split))


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")


def config_hash(family: str, config: Mapping[str, Any]) -> str:
    blob = json.dumps({"family": family, "config": config}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def key_to_rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded from a JAX PRNG key (config sampling is plain Python)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, dtype=np.uint32).ravel().tolist())


class TaskFamily(abc.ABC):
    """Samples task configurations; subclasses document their sampling space in ``space``."""

    name: str = ""
    description: str = ""
    #: Human-readable sampling space: name -> allowed values (menus or ranges).
    space: Mapping[str, Any] = {}

    @abc.abstractmethod
    def sample_config(self, rng: np.random.Generator) -> dict:
        """Draws one JSON-serialisable configuration."""

    @abc.abstractmethod
    def build(self, config: Mapping[str, Any]) -> TaskParts:
        """Builds the spec, traced hyperparameters and data splits of a configuration."""

    def sample(self, key: jax.Array) -> Task:
        return self.task(self.sample_config(key_to_rng(key)))

    def task(self, config: Mapping[str, Any], *, task_id: str | None = None,
             data_dir=None) -> Task:
        """The task of ``config``; ``data_dir`` is where real data sets are read from (families
        that use them take it as a ``build`` keyword)."""
        config = json.loads(json.dumps(config))  # normalise to plain JSON types
        tid = task_id or f"{self.name}/{config_hash(self.name, config)[:10]}"
        build = self.build if data_dir is None else functools.partial(self.build,
                                                                      data_dir=data_dir)
        return Task(id=tid, family=self.name, config=config, _build=build)


# ---------------------------------------------------------------------------------------------
# Helpers shared by families.


def choice(rng: np.random.Generator, menu):
    """Uniform choice from a menu, returned as a plain Python value."""
    value = menu[int(rng.integers(len(menu)))]
    return value.item() if hasattr(value, "item") else value


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def round_sig(x: float, digits: int = 4) -> float:
    """Rounds to significant digits so configurations print (and hash) compactly."""
    return float(f"{x:.{digits}g}")

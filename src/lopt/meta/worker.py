"""A worker computes meta-gradient estimates over the task pools it owns.

The learner only ever calls ``worker.estimate(theta, version)`` and reads plain numbers and
arrays back, so the same object can live in this process or inside a Ray actor.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lopt.compile_cache import COMPILER_OPTIONS
from lopt.meta import unroll as U
from lopt.meta.estimators import EstimatorState, estimate, init_estimator_state
from lopt.optimizers.base import LearnedOptimizer
from lopt.tasks.base import Task


@dataclasses.dataclass(frozen=True)
class UnrollConfig:
    """How a worker unrolls its tasks (static: changing it recompiles)."""

    estimator: str = "pes"
    sigma: float = 0.01
    truncation: int = 50
    horizon: int = 2000
    min_length: int = 100
    objective: str = "outer_valid"
    clip: float = 2.0
    valid_every: int = 10
    train_only_fraction: float = 0.0


class Estimate(NamedTuple):
    """What a worker sends back: a gradient for theta version ``version``, and metrics."""

    grad: Any
    version: int
    metrics: dict


def build_pools(tasks: Sequence[Task], normalisers: dict[str, tuple[float, float]],
                pairs_per_pool: int) -> list[tuple[U.Pool, int]]:
    """Groups tasks by shape bucket into pools (stacked hparams; shared or stacked data).

    ``normalisers`` maps task id -> (initial loss, best baseline loss). Returns a list of
    ``(pool, pairs)``.
    """
    buckets: dict[Any, list[Task]] = defaultdict(list)
    for t in tasks:
        buckets[t.bucket].append(t)
    pools = []
    for group in buckets.values():
        group = sorted(group, key=lambda t: t.id)
        first = group[0]
        hp = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[t.hparams for t in group])
        shared = all(_same_arrays(t.data, first.data) for t in group[1:])
        data = first.data if shared else jax.tree_util.tree_map(
            lambda *a: jnp.stack(a), *[t.data for t in group])
        init = jnp.asarray([normalisers[t.id][0] for t in group], jnp.float32)
        best = jnp.asarray([normalisers[t.id][1] for t in group], jnp.float32)
        pool = U.Pool(first.spec, hp, data, init, best, tuple(t.id for t in group),
                      data_per_task=not shared)
        pools.append((pool, pairs_per_pool))
    return pools


def _same_arrays(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(x is y for x, y in zip(la, lb))


class Worker:
    """Owns task pools and their inner states; estimates the meta-gradient at a given theta."""

    def __init__(self, learned: LearnedOptimizer, pools: list[tuple[U.Pool, int]],
                 config: UnrollConfig, *, seed: int = 0, families: Sequence[str] = (),
                 threads: int | None = None):
        self.learned = learned
        self.pools = list(pools)
        self.config = config
        self.seed = seed
        self.families = list(families) or [p.task_ids[0].split("/")[0] for p, _ in pools]
        self.states: list[EstimatorState] | None = None
        self._programs: dict = {}
        self.calls = 0
        # Pools run concurrently, one per core: one XLA:CPU program of small vmapped products
        # keeps about one core busy (two pools on two threads: 1.3x the inner steps/s of one,
        # benchmarks/results/meta.md). Results do not depend on the number of threads.
        self.threads = threads or len(os.sched_getaffinity(0))
        self._executor = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    # -- state ------------------------------------------------------------------------------

    def init(self, theta, *, seed: int | None = None) -> None:
        """Fresh inner runs in every pool (``seed`` defaults to the worker's)."""
        seed = self.seed if seed is None else seed
        self.states = [self._fresh_state(i, theta, seed) for i in range(len(self.pools))]

    def _fresh_state(self, i: int, theta, seed: int) -> EstimatorState:
        pool, pairs = self.pools[i]
        keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), i), pairs)

        # One compiled program, dropped after use: run eagerly, the init would leave hundreds
        # of small cached executables per shape bucket (each holds code mappings; a long
        # rotating run would exhaust the process's memory-map limit).
        @functools.partial(jax.jit, compiler_options=COMPILER_OPTIONS)
        def fresh(theta, pool, keys):
            runs = jax.vmap(lambda k: U.new_run(
                pool, lambda: self.learned.optimizer(theta), k,
                min_length=self.config.min_length, horizon=self.config.horizon))(keys)
            return init_estimator_state(runs, theta)

        return fresh(theta, pool, keys)

    def replace_pool(self, i: int, pool: tuple[U.Pool, int], theta, *, seed: int) -> None:
        """Swaps pool ``i`` for another (e.g. a new shape bucket) with fresh inner runs."""
        self.pools[i] = pool
        self.families[i] = pool[0].task_ids[0].split("/")[0]
        if self.states is not None:
            self.states[i] = self._fresh_state(i, theta, seed)

    def _program(self, pool: U.Pool):
        key = (self.config, pool.spec, pool.data_per_task)
        if key not in self._programs:
            self._programs[key] = _estimate_program(self.learned, self.config)
        return self._programs[key]

    def _drop_unused_programs(self) -> None:
        """Forgets compiled estimates of other configs and of buckets no pool holds any more
        (compiled programs are kept only while in use, which bounds the process's memory)."""
        live = {(self.config, p.spec, p.data_per_task) for p, _ in self.pools}
        for key in set(self._programs) - live:
            del self._programs[key]

    def state_dict(self) -> dict:
        return {"states": self.states, "calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.states = list(state["states"])
        self.calls = int(state["calls"])

    # -- estimates --------------------------------------------------------------------------

    def estimate(self, theta, version: int) -> Estimate:
        """Averages one truncation's estimate over every pool."""
        if self.states is None:
            self.init(theta)
        t0 = time.perf_counter()
        grads, by_family = [], defaultdict(list)
        key = jax.random.fold_in(jax.random.key(self.seed + 1), self.calls)
        self._drop_unused_programs()

        def run(i):
            start = time.perf_counter()
            pool = self.pools[i][0]
            grad, state, meta = self._program(pool)(theta, pool, self.states[i],
                                                    jax.random.fold_in(key, i))
            meta = float(meta)  # waits for the program
            return grad, state, meta, time.perf_counter() - start

        indices = range(len(self.pools))
        results = list(self._executor.map(run, indices) if self._executor else map(run, indices))
        seconds = defaultdict(float)
        for i, (grad, state, meta, took) in enumerate(results):
            self.states[i] = state
            grads.append(grad)
            by_family[f"meta_loss/{self.families[i]}"].append(meta)
            seconds[f"seconds/{self.families[i]}"] += took  # compiles included: find slow pools
        self.calls += 1
        grad = jax.tree_util.tree_map(lambda *g: sum(g) / len(g), *grads)
        per_pair = 1 if self.config.estimator == "tbptt" else 2  # TBPTT unrolls one member
        inner = sum(per_pair * pairs * self.config.truncation for _, pairs in self.pools)
        elapsed = time.perf_counter() - t0
        metrics = {k: float(np.mean(v)) for k, v in by_family.items()}
        metrics["meta_loss"] = float(np.mean([x for v in by_family.values() for x in v]))
        metrics["inner_steps"] = inner
        metrics["worker_seconds"] = elapsed
        metrics.update(seconds)
        return Estimate(jax.device_get(grad), version, metrics)


def _estimate_program(learned, config: UnrollConfig, compiler_options=COMPILER_OPTIONS):
    """A jitted estimate for one pool (compiled on first call for the pool's shapes)."""

    def run(theta, pool, state, key):
        def unroll_fn(thetas, states):
            def one(th, s):
                s, meta, _, done = U.unroll(
                    pool, lambda: learned.optimizer(th), s, config.truncation,
                    objective=config.objective, valid_every=config.valid_every, clip=config.clip,
                    train_only_fraction=config.train_only_fraction, remat=config.estimator == "tbptt")
                return s, jnp.mean(meta), done
            return jax.vmap(one)(thetas, states)

        def reset_fn(states, mask):
            return jax.vmap(lambda s, m: U.reset(
                pool, lambda: learned.optimizer(theta), s, m,
                min_length=config.min_length, horizon=config.horizon))(states, mask)

        return estimate(config.estimator, unroll_fn, reset_fn, theta, state, key,
                        sigma=config.sigma)

    return jax.jit(run, compiler_options=compiler_options)

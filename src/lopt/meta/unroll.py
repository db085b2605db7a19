"""Truncated inner training: a pool of tasks of one shape bucket, each with its inner state,
unrolled a few steps at a time under a learned optimizer.

A pool holds the stacked traced hyperparameters of every meta-train task of its bucket; a
particle (one inner run) carries the index of its current task. When a run reaches its sampled
length (log-uniform up to the horizon), it is reset inside the compiled unroll: a new task from
the pool, a new initialisation, a new length.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from lopt.tasks.base import TaskSpec, eval_split, sample_split


class InnerState(NamedTuple):
    """One particle's inner run (a leading particle axis when batched)."""

    params: Any
    opt_state: Any
    step: jax.Array  # steps taken in the current run
    length: jax.Array  # the run's sampled length
    task: jax.Array  # index of the current task in the pool
    key: jax.Array  # drives this run's init, minibatches and resets
    valid_loss: jax.Array  # latest validation loss fed to the optimizer


@struct.dataclass
class Pool:
    """Meta-train tasks of one shape bucket, stacked: ``hp`` leaves have a leading task axis, and
    so do ``data`` leaves when ``data_per_task`` (otherwise all tasks share one data set)."""

    spec: TaskSpec = struct.field(pytree_node=False)
    hp: Any
    data: Any
    init_loss: jax.Array  # [tasks] loss at initialisation (normalisation's 1)
    best_loss: jax.Array  # [tasks] best tuned-baseline loss (normalisation's 0)
    task_ids: tuple = struct.field(pytree_node=False)
    data_per_task: bool = struct.field(pytree_node=False, default=False)

    def task_data(self, index):
        if not self.data_per_task:
            return self.data
        return jax.tree_util.tree_map(lambda a: a[index], self.data)


def sample_length(key, min_length: int, horizon: int):
    """Log-uniform integer in ``[min_length, horizon]``."""
    u = jax.random.uniform(key, (), minval=np.log(min_length), maxval=np.log(horizon + 1))
    return jnp.clip(jnp.floor(jnp.exp(u)).astype(jnp.int32), min_length, horizon)


def _task_hp(pool: Pool, index):
    return jax.tree_util.tree_map(lambda a: a[index], pool.hp)


def new_run(pool: Pool, make_opt, key, *, min_length: int, horizon: int) -> InnerState:
    """A fresh inner run on a random task of the pool."""
    k_task, k_init, k_len, k_next = jax.random.split(key, 4)
    n = pool.init_loss.shape[0]
    task = jax.random.randint(k_task, (), 0, n)
    params = pool.spec.init(_task_hp(pool, task), k_init)
    return InnerState(params=params, opt_state=make_opt().init(params), step=jnp.zeros((), jnp.int32),
                      length=sample_length(k_len, min_length, horizon), task=task, key=k_next,
                      valid_loss=jnp.array(jnp.nan, jnp.float32))


def normalised(pool: Pool, task, loss, *, clip: float):
    """Per-task normalised loss, clipped to ``[-clip, clip]`` and NaN-safe (NaN -> clip)."""
    scale = jnp.maximum(pool.init_loss[task] - pool.best_loss[task], 1e-6)
    value = (loss - pool.best_loss[task]) / scale
    return jnp.where(jnp.isfinite(value), jnp.clip(value, -clip, clip), clip)


def unroll(pool: Pool, make_opt, state: InnerState, num_steps: int, *,
           objective: str = "outer_valid", valid_every: int = 10, clip: float = 2.0,
           train_only_fraction: float = 0.0, remat: bool = False):
    """Unrolls one particle ``num_steps`` inner steps with the optimizer ``make_opt()``.

    A share ``train_only_fraction`` of runs (drawn per run from its key, so a run keeps its
    kind across truncations) gets the training loss alone, as most optax users call an
    optimizer; the others get a validation loss every ``valid_every`` steps.

    A run at its first step starts from ``make_opt().init``, so that the meta-gradient (or
    perturbation) reaches the meta-parameters of the optimizer's initial state.

    ``remat`` recomputes each step's intermediates when differentiating (TBPTT), keeping only
    the inner states between steps: the per-element network's activations of every step
    would otherwise be held for the backward pass.

    A run whose loss or parameters stop being finite is frozen and its meta-loss counts as
    ``clip``. Returns ``(state, meta_losses [num_steps], train_losses [num_steps], done)`` where
    ``done`` says the run reached its length or diverged (reset it with ``reset``).
    """
    spec = pool.spec
    opt = make_opt()
    data = pool.task_data(state.task)
    # A run at its first step takes its optimizer state from this unroll's meta-parameters:
    # ``reset`` built it outside the differentiated (or perturbed) unroll, with the previous
    # outer step's theta, so the entries that only set the initial state (the hierarchical
    # optimizer's ``lstm_init``, ``feedback_init``) would never get a meta-gradient.
    fresh = opt.init(state.params)
    state = state._replace(opt_state=jax.tree_util.tree_map(
        lambda f, s: jnp.where(state.step == 0, f, s), fresh, state.opt_state))
    # the run's key, hence its kind, is the same at every step of the unroll
    fed_valid = feeds_valid(state.key, train_only_fraction) if train_only_fraction > 0 else None

    def step(carry, i):
        state, dead = carry
        k_b, k_l, k_v, k_o = jax.random.split(jax.random.fold_in(state.key, state.step), 4)
        hp = _task_hp(pool, state.task)
        batch = sample_split(spec, hp, data, "train", k_b)
        loss, grads = jax.value_and_grad(lambda p: spec.loss(hp, p, batch, k_l))(state.params)
        # Every ``valid_every`` steps of the unroll: the loop index, unlike the run's own step,
        # is the same for all particles, so under vmap this stays a branch instead of
        # computing the validation loss at every step. Runs start at an unroll's first step,
        # so with truncations a multiple of ``valid_every`` the two schedules coincide.
        vloss = jax.lax.cond(
            i % valid_every == 0,
            lambda: spec.loss(hp, state.params, sample_split(spec, hp, data, "valid", k_v),
                              k_l),
            lambda: state.valid_loss)
        fed = vloss
        if train_only_fraction > 0:  # a NaN validation loss reads as none (``loss_features``)
            fed = jnp.where(fed_valid, vloss, jnp.nan)
        updates, opt_state = opt.update(grads, state.opt_state, state.params, value=loss,
                                        valid_loss=fed)
        params = jax.tree_util.tree_map(lambda p, u: p + u.astype(p.dtype), state.params, updates)
        if objective == "outer_valid":
            meta = spec.loss(hp, params, sample_split(spec, hp, data, "outer_valid", k_o), k_l)
        else:
            meta = loss
        dead = dead | ~(jnp.isfinite(loss) & _all_finite(params))
        meta = jnp.where(dead, clip, normalised(pool, state.task, meta, clip=clip))
        nxt = InnerState(params, opt_state, state.step + 1, state.length, state.task, state.key,
                         vloss)
        nxt = jax.tree_util.tree_map(lambda old, new: jnp.where(dead, old, new), state, nxt)
        nxt = nxt._replace(step=state.step + 1)
        return (nxt, dead), (meta, jnp.where(dead, jnp.nan, loss))

    if remat:
        step = jax.checkpoint(step, prevent_cse=False)
    (state, dead), (meta, train) = jax.lax.scan(step, (state, jnp.array(False)),
                                                jnp.arange(num_steps))
    return state, meta, train, dead | (state.step >= state.length)


def feeds_valid(key, train_only_fraction: float) -> jax.Array:
    """Whether the run with key ``key`` is fed validation losses (see ``unroll``)."""
    draw = jax.random.uniform(jax.random.fold_in(key, 0x5EED))
    return draw >= train_only_fraction


def reset(pool: Pool, make_opt, state: InnerState, done, *, min_length: int, horizon: int):
    """Replaces a finished run by a fresh one (new task, init and length) where ``done``."""
    fresh = new_run(pool, make_opt, jax.random.fold_in(state.key, 1_000_003),
                    min_length=min_length, horizon=horizon)
    return jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), fresh, state)


def _all_finite(tree):
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def init_eval_loss(spec, hp, data, key, size=256):
    """Loss at initialisation on the fixed train evaluation batch (used when no store entry)."""
    params = spec.init(hp, key)
    return spec.loss(hp, params, eval_split(spec, hp, data, "train", size), key)

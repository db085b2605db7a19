"""Inner training: one optimizer on one task, the whole run compiled as a ``lax.scan``.

``train`` runs a single optimizer on a single task; ``train_many`` runs several of one shape at
once through ``vmap`` (learning-rate sweeps, seeds, tasks of one shape bucket). Minibatches are
sampled inside the compiled step, the training loss is recorded at every step, losses on fixed
evaluation batches of each split at an interval, and a run whose loss or parameters stop being
finite is frozen from that step on and reported as diverged.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.compile_cache import COMPILER_OPTIONS
from lopt.tasks.base import SPLITS, Task, eval_split, sample_split

#: Keyword under which the validation loss reaches an optimizer's ``update`` (training loss: ``value``).
VALID_LOSS_KWARG = "valid_loss"


class TrainResult(NamedTuple):
    """Curves of one run (or, from ``train_many``, of several runs along a leading axis)."""

    train_loss: jax.Array  # [num_steps] minibatch loss at each step, before its update
    eval_steps: jax.Array  # [num_evals] steps at which the eval losses were measured
    eval_loss: dict  # split -> [num_evals] loss on the split's fixed evaluation batch
    diverged: jax.Array  # bool: the loss or the parameters became non-finite
    diverged_at: jax.Array  # first non-finite step, or -1
    params: Any  # final parameters (the last finite ones for a diverged run)


def train(task: Task, optimizer, num_steps: int, key: jax.Array, *, opt_hparams=None,
          eval_every: int | None = None, eval_size: int = 512,
          eval_splits: Sequence[str] = SPLITS, valid_every: int | None = None) -> TrainResult:
    """Trains ``task`` with ``optimizer`` for ``num_steps`` steps, compiled end to end.

    Args:
      task: the task to train.
      optimizer: an ``optax.GradientTransformation`` (its ``update`` receives the training loss
        as ``value=``, and the validation loss as ``valid_loss=`` when ``valid_every`` is set);
        or, with ``opt_hparams``, a function ``opt_hparams -> GradientTransformation``.
      num_steps: number of optimizer steps (positive).
      key: PRNG key for the initialisation, minibatches and any noise in the loss.
      opt_hparams: optimizer hyperparameters, passed traced so changing them does not recompile.
      eval_every: steps between evaluations (default: about 20 evaluations per run).
      eval_size: examples in each split's fixed evaluation batch.
      eval_splits: splits to evaluate.
      valid_every: if set, a validation minibatch loss is computed every so many steps and the
        latest one is passed to the optimizer as ``valid_loss=``.
    """
    return _train(task, optimizer, num_steps, key, opt_hparams, batched=False,
                  eval_every=eval_every, eval_size=eval_size, eval_splits=eval_splits,
                  valid_every=valid_every)


def train_many(tasks: Task | Sequence[Task], optimizer, num_steps: int, keys: jax.Array, *,
               opt_hparams=None, eval_every: int | None = None, eval_size: int = 512,
               eval_splits: Sequence[str] = SPLITS,
               valid_every: int | None = None) -> TrainResult:
    """Several runs of one shape in a single ``vmap``-ed, compiled program.

    ``tasks`` is one task (shared by all runs) or a list of tasks of one shape bucket;
    ``opt_hparams`` (optional) has a leading axis with one entry per run; ``keys`` is an array of
    keys, one per run, or a single key that is split. The result's arrays have a leading run axis.
    """
    return _train(tasks, optimizer, num_steps, keys, opt_hparams, batched=True,
                  eval_every=eval_every, eval_size=eval_size, eval_splits=eval_splits,
                  valid_every=valid_every)


# ---------------------------------------------------------------------------------------------


def _check_args(optimizer, num_steps, opt_hparams, eval_every, eval_splits, valid_every):
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps <= 0:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if opt_hparams is None:
        if not isinstance(optimizer, optax.GradientTransformation):
            raise TypeError(
                f"optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-3)), got "
                f"{type(optimizer).__name__}; pass opt_hparams= to use a function that builds one")
    elif isinstance(optimizer, optax.GradientTransformation) or not callable(optimizer):
        raise TypeError("with opt_hparams=, optimizer must be a function opt_hparams -> "
                        f"optax.GradientTransformation, got {type(optimizer).__name__}")
    for name, value in (("eval_every", eval_every), ("valid_every", valid_every)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value <= 0):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    bad = [s for s in eval_splits if s not in SPLITS]
    if bad:
        raise ValueError(f"unknown eval split(s) {bad}; allowed: {', '.join(SPLITS)}")


def _train(tasks, optimizer, num_steps, keys, opt_hparams, *, batched, eval_every, eval_size,
           eval_splits, valid_every):
    _check_args(optimizer, num_steps, opt_hparams, eval_every, eval_splits, valid_every)
    num_steps = int(num_steps)
    eval_every = int(eval_every or max(1, math.ceil(num_steps / 20)))
    eval_splits = tuple(eval_splits)
    many_tasks = batched and not isinstance(tasks, Task)
    task_list = list(tasks) if many_tasks else [tasks]
    if not task_list or not all(isinstance(t, Task) for t in task_list):
        raise TypeError(f"tasks must be a lopt Task or a non-empty list of Tasks, got {tasks!r}")
    first = task_list[0]
    buckets = {t.bucket for t in task_list}
    if len(buckets) > 1:
        raise ValueError(f"tasks of different shape buckets cannot be vmapped together: "
                         f"{[t.id for t in task_list]}")

    hp, data = first.hparams, first.data
    hp_axis = data_axis = None
    if many_tasks and len(task_list) > 1:
        hp = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[t.hparams for t in task_list])
        hp_axis = 0
        if not all(_same_arrays(t.data, data) for t in task_list[1:]):
            data = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[t.data for t in task_list])
            data_axis = 0

    if batched:
        n = _num_runs(task_list if many_tasks else None, opt_hparams, keys)
        if keys.ndim == 0 or (not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) and keys.ndim == 1):
            keys = jax.random.split(keys, n)
        if hp_axis is not None and len(task_list) != n:
            raise ValueError(f"{len(task_list)} tasks but {n} runs")
    opt_axis = None if opt_hparams is None else 0

    fn = _compiled(first.spec, optimizer, num_steps, eval_every, eval_size, eval_splits,
                   valid_every, opt_hparams is not None, batched, hp_axis, data_axis, opt_axis)
    return fn(hp, data, opt_hparams, keys)


def _same_arrays(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(x is y for x, y in zip(la, lb))


def _num_runs(task_list, opt_hparams, keys):
    sizes = set()
    if task_list is not None and len(task_list) > 1:
        sizes.add(len(task_list))
    if opt_hparams is not None:
        sizes |= {int(x.shape[0]) for x in jax.tree_util.tree_leaves(opt_hparams)}
    is_key_array = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    if (is_key_array and keys.ndim == 1) or (not is_key_array and keys.ndim == 2):
        sizes.add(int(keys.shape[0]))
    if len(sizes) > 1:
        raise ValueError(f"inconsistent numbers of runs (tasks, opt_hparams, keys): {sorted(sizes)}")
    if not sizes:
        raise ValueError("train_many needs a list of tasks, batched opt_hparams or a batch of keys")
    return sizes.pop()


# Few programs are kept: each compiled program holds its machine code in thousands of memory
# mappings on CPU, and a process may have only about 65k (a long benchmark would run out).
@functools.lru_cache(maxsize=8)
def _compiled(spec, optimizer, num_steps, eval_every, eval_size, eval_splits, valid_every,
              has_opt_hp, batched, hp_axis, data_axis, opt_axis):
    run = _make_run(spec, optimizer, num_steps, eval_every, eval_size, eval_splits, valid_every,
                    has_opt_hp)
    if batched:
        run = jax.vmap(run, in_axes=(hp_axis, data_axis, opt_axis, 0))
    return jax.jit(run, compiler_options=COMPILER_OPTIONS)


def _tree_all_finite(tree):
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _make_run(spec, optimizer, num_steps, eval_every, eval_size, eval_splits, valid_every,
              has_opt_hp) -> Callable:
    def run(hp, data, opt_hp, key):
        opt = optimizer(opt_hp) if has_opt_hp else optimizer
        opt = optax.with_extra_args_support(opt)
        k_init, k_steps, k_eval = jax.random.split(key, 3)
        params = spec.init(hp, k_init)
        opt_state = opt.init(params)
        eval_batches = {s: eval_split(spec, hp, data, s, eval_size) for s in eval_splits}

        def evaluate(params, dead):
            return {s: jnp.where(dead, jnp.nan, spec.loss(hp, params, eval_batches[s], k_eval))
                    for s in eval_splits}

        def valid_minibatch_loss(params, key):
            k_batch, k_loss = jax.random.split(key)
            batch = sample_split(spec, hp, data, "valid", k_batch)
            return spec.loss(hp, params, batch, k_loss)

        def step(carry, t):
            params, opt_state, dead, diverged_at, vloss = carry
            k_batch, k_loss, k_valid = jax.random.split(jax.random.fold_in(k_steps, t), 3)
            batch = sample_split(spec, hp, data, "train", k_batch)
            loss, grads = jax.value_and_grad(lambda p: spec.loss(hp, p, batch, k_loss))(params)
            extra = {"value": loss}
            if valid_every:
                vloss = jax.lax.cond(t % valid_every == 0,
                                     lambda: valid_minibatch_loss(params, k_valid), lambda: vloss)
                extra[VALID_LOSS_KWARG] = vloss
            updates, opt_state = opt.update(grads, opt_state, params, **extra)
            new_params = optax.apply_updates(params, updates)
            ok = jnp.isfinite(loss) & _tree_all_finite(new_params)
            diverged_at = jnp.where(~dead & ~ok, t, diverged_at)
            recorded = jnp.where(dead, jnp.nan, loss)
            dead = dead | ~ok
            # A dead run keeps its last finite parameters; its optimizer state, which may hold
            # NaNs from then on, only ever feeds updates that are discarded.
            params = jax.tree_util.tree_map(lambda a, b: jnp.where(dead, a, b), params,
                                            new_params)
            return (params, opt_state, dead, diverged_at, vloss), recorded

        def run_steps(carry, start, length):
            return jax.lax.scan(step, carry, start + jnp.arange(length))

        def chunk(carry, start):
            carry, losses = run_steps(carry, start, eval_every)
            return carry, (losses, evaluate(carry[0], carry[2]))

        carry = (params, opt_state, jnp.array(False), jnp.array(-1, jnp.int32),
                 jnp.array(jnp.nan, jnp.float32))
        first_eval = evaluate(params, jnp.array(False))
        n_chunks, tail = divmod(num_steps, eval_every)
        starts = jnp.arange(n_chunks) * eval_every
        carry, (losses, evals) = jax.lax.scan(chunk, carry, starts)
        losses = losses.reshape(-1)
        evals = {s: jnp.concatenate([first_eval[s][None], evals[s]]) for s in eval_splits}
        steps = list(range(0, n_chunks * eval_every + 1, eval_every))
        if tail:
            carry, tail_losses = run_steps(carry, n_chunks * eval_every, tail)
            losses = jnp.concatenate([losses, tail_losses])
            last = evaluate(carry[0], carry[2])
            evals = {s: jnp.concatenate([evals[s], last[s][None]]) for s in eval_splits}
            steps.append(num_steps)
        params, _, dead, diverged_at, _ = carry
        return TrainResult(losses, jnp.asarray(steps, jnp.int32), evals, dead, diverged_at, params)

    return run

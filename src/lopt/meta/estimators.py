"""Gradient estimators for truncated unrolls: antithetic ES and Persistent ES (PES).

Both work on any unroll, given as two functions over a batch of particles:

* ``unroll_fn(thetas, states) -> (states, meta_loss [n], done [n])`` advances every particle one
  truncation with its own meta-parameters (``thetas`` has a leading particle axis);
* ``reset_fn(states, mask) -> states`` restarts the particles where ``mask`` is true.

Particles come in antithetic pairs (``+eps`` and ``-eps``) that share their task, initialisation
and minibatches. PES keeps, per pair, the sum of the perturbations applied since the run
started, which makes its estimate of the full-horizon gradient unbiased (Vicol et al. 2021);
truncated ES uses only the current truncation's perturbation and so ignores how theta shaped
the state the truncation started from.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

ESTIMATORS = ("es", "pes")


class EstimatorState(NamedTuple):
    states: Any  # inner states, leading axis 2 * pairs: [+ members..., - members...]
    acc: Any  # PES perturbation accumulator, theta-shaped with a leading pair axis


def init_estimator_state(states_pairs, theta) -> EstimatorState:
    """Duplicates each pair's initial inner state for its + and - members."""
    states = jax.tree_util.tree_map(lambda a: jnp.concatenate([a, a]), states_pairs)
    n = jax.tree_util.tree_leaves(states_pairs)[0].shape[0]
    acc = jax.tree_util.tree_map(lambda t: jnp.zeros((n, *t.shape), t.dtype), theta)
    return EstimatorState(states, acc)


def estimate(kind: str, unroll_fn: Callable, reset_fn: Callable, theta, state: EstimatorState,
             key, *, sigma: float):
    """One truncation of antithetic ES (``kind="es"``) or PES (``"pes"``).

    Returns ``(gradient, new_state, mean_meta_loss)``; the gradient estimates d(meta-loss)/d
    theta averaged over pairs.
    """
    if kind not in ESTIMATORS:
        raise ValueError(f"unknown estimator {kind!r}; allowed: {', '.join(ESTIMATORS)}")
    n = jax.tree_util.tree_leaves(state.acc)[0].shape[0]
    leaves, treedef = jax.tree_util.tree_flatten(theta)
    keys = jax.random.split(key, len(leaves))
    eps = treedef.unflatten([sigma * jax.random.normal(k, (n, *x.shape), x.dtype)
                             for k, x in zip(keys, leaves)])
    acc = eps if kind == "es" else jax.tree_util.tree_map(jnp.add, state.acc, eps)
    thetas = jax.tree_util.tree_map(
        lambda t, e: jnp.concatenate([t[None] + e, t[None] - e]), theta, eps)
    states, meta, done = unroll_fn(thetas, state.states)
    diff = meta[:n] - meta[n:]
    grad = jax.tree_util.tree_map(
        lambda a: jnp.tensordot(diff, a, axes=1) / (2 * sigma**2 * n), acc)
    pair_done = done[:n] | done[n:]
    states = reset_fn(states, jnp.concatenate([pair_done, pair_done]))
    acc = jax.tree_util.tree_map(
        lambda a: jnp.where(pair_done.reshape((-1,) + (1,) * (a.ndim - 1)), 0.0, a), acc)
    return grad, EstimatorState(states, acc), jnp.mean(meta)

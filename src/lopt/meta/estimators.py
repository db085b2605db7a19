"""Gradient estimators for truncated unrolls: antithetic ES, Persistent ES (PES) and truncated
backpropagation (TBPTT).

All three work on any unroll, given as two functions over a batch of particles:

* ``unroll_fn(thetas, states) -> (states, meta_loss [n], done [n])`` advances every particle one
  truncation with its own meta-parameters (``thetas`` has a leading particle axis);
* ``reset_fn(states, mask) -> states`` restarts the particles where ``mask`` is true.

Particles come in antithetic pairs (``+eps`` and ``-eps``) that share their task, initialisation
and minibatches. PES keeps, per pair, the sum of the perturbations applied since the run
started, which makes its estimate of the full-horizon gradient unbiased (Vicol et al. 2021);
truncated ES uses only the current truncation's perturbation and so ignores how theta shaped
the state the truncation started from.

TBPTT differentiates the truncation itself: the exact gradient of its meta-loss with the state
it started from held fixed (biased like truncated ES, but with no sampling noise, which at a
few particles and tens of thousands of meta-parameters is what ES spends its compute on). It
unrolls one member of each pair and mirrors it into the other, so the curriculum can switch
between estimators at any step.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

ESTIMATORS = ("es", "pes", "tbptt")


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
             key, *, sigma: float, max_norm: float = 1.0):
    """One truncation of antithetic ES (``kind="es"``), PES (``"pes"``) or TBPTT (``"tbptt"``).

    Returns ``(gradient, new_state, mean_meta_loss)``; the gradient estimates d(meta-loss)/d
    theta averaged over pairs. ``sigma`` is unused by TBPTT, ``max_norm`` only by it (each
    particle's gradient is clipped to that global norm).
    """
    if kind not in ESTIMATORS:
        raise ValueError(f"unknown estimator {kind!r}; allowed: {', '.join(ESTIMATORS)}")
    n = jax.tree_util.tree_leaves(state.acc)[0].shape[0]
    if kind == "tbptt":
        return _backprop(unroll_fn, reset_fn, theta, state, n, max_norm)
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
    acc = jax.tree_util.tree_map(lambda a: jnp.where(_rows(pair_done, a), 0.0, a), acc)
    return grad, EstimatorState(states, acc), jnp.mean(meta)


def _backprop(unroll_fn, reset_fn, theta, state: EstimatorState, n: int, max_norm: float):
    """TBPTT through the first member of each pair; the second is overwritten by its copy.

    Each particle's gradient is clipped to global norm ``max_norm`` before they are averaged:
    an unroll near the edge of stability has gradients thousands of times larger than the
    rest (they explode with the truncation length), and would otherwise decide the step alone.
    A particle whose gradient is not finite (its run diverged: the frozen state's derivative
    is NaN) counts as zero, so it does not cost the other particles their estimate.
    """
    first = jax.tree_util.tree_map(lambda a: a[:n], state.states)
    thetas = jax.tree_util.tree_map(lambda t: jnp.broadcast_to(t, (n, *t.shape)), theta)

    def total(thetas):
        states, meta, done = unroll_fn(thetas, first)
        return jnp.sum(meta), (states, meta, done)

    # The gradient with respect to the broadcast copies is each particle's own gradient.
    per_particle, (states, meta, done) = jax.grad(total, has_aux=True)(thetas)
    leaves = jax.tree_util.tree_leaves(per_particle)
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.reshape(n, -1)), axis=1) for g in leaves))
    finite = jnp.isfinite(norm)
    weight = jnp.where(finite, jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-30)), 0.0) / n
    grad = jax.tree_util.tree_map(
        lambda g: jnp.tensordot(weight, jnp.where(_rows(finite, g), g, 0.0), axes=1),
        per_particle)
    # A reset depends only on the state it replaces, so the copies are reset once, then mirrored.
    states = reset_fn(states, done)
    both = jax.tree_util.tree_map(lambda a: jnp.concatenate([a, a]), states)
    # No perturbation was applied: a later PES phase starts its accumulators afresh.
    acc = jax.tree_util.tree_map(jnp.zeros_like, state.acc)
    return grad, EstimatorState(both, acc), jnp.mean(meta)


def _rows(mask, a):
    return mask.reshape((-1,) + (1,) * (a.ndim - 1))

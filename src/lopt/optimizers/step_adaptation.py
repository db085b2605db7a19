"""Step-size adaptation around any update rule, per tensor (a normalised, multiplicative form of
hypergradient descent, Baydin et al. 2018) or per element (in the manner of delta-bar-delta,
Jacobs 1988).

Each parameter tensor keeps a log step multiplier. At every step it moves by ``rate`` times the
cosine between the new gradient's descent direction and the update applied last step: positive
when the last step did not go far enough (the gradient still points the same way), negative when
it overshot (the gradient turned back). It is clipped to ``[-max_log_scale, max_log_scale]``,
so the rule's steps are scaled by at most ``exp(max_log_scale)`` either way.

With ``per_element`` every element keeps its own multiplier, moved by that element's term of the
same cosine, ``-g_i u_i / (RMS(g) RMS(u))`` clipped to [-1, 1] (the per-tensor cosine is their
mean before clipping): an element whose gradient keeps its sign grows its step while the
oscillating ones shrink theirs. It costs one more parameter-sized buffer.

The learned optimizers were meta-trained on 200-step truncations, which cannot see the benefit of
shrinking the step late in a long run or growing it on a task that wants larger steps throughout;
this adapts both, with one fixed rate for every task (chosen on the selection subset,
``benchmarks/bench_step_adaptation.py``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

#: The default bound on the log step multiplier: steps change by at most 8x either way.
ADAPT_MAX_LOG_SCALE = math.log(8.0)


class StepAdaptationState(NamedTuple):
    inner: Any  # the wrapped rule's state
    previous: Any  # per parameter: the update applied last step
    log_scale: Any  # per parameter: the log step multiplier (a scalar, or per element)


def _unit(grad: jax.Array, previous: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gradient (non-finite elements as zero) and previous update in float32, each divided by
    its largest magnitude, so that neither their products nor their squares can underflow or
    overflow."""
    g = grad.astype(jnp.float32)
    g = jnp.where(jnp.isfinite(g), g, 0.0)
    u = previous.astype(jnp.float32)
    return (g / jnp.maximum(jnp.max(jnp.abs(g)), 1e-30),
            u / jnp.maximum(jnp.max(jnp.abs(u)), 1e-30))


def descent_cosine(grad: jax.Array, previous: jax.Array) -> jax.Array:
    """Cosine between ``-grad`` and the ``previous`` update (0 where either is zero);
    non-finite gradient elements count as zero, as the learned optimizers' clipping treats them."""
    g, u = _unit(grad, previous)
    norms = jnp.sqrt(jnp.sum(g * g) * jnp.sum(u * u))
    ok = norms > 0
    return jnp.where(ok, -jnp.sum(g * u) / jnp.where(ok, norms, 1.0), 0.0)


def descent_agreement(grad: jax.Array, previous: jax.Array) -> jax.Array:
    """Per element, ``-grad * previous`` over the product of their RMS, clipped to [-1, 1]
    (0 where either is zero; non-finite gradient elements count as zero)."""
    g, u = _unit(grad, previous)
    norms = jnp.sqrt(jnp.mean(g * g) * jnp.mean(u * u))
    ok = norms > 0
    return jnp.clip(jnp.where(ok, -g * u / jnp.where(ok, norms, 1.0), 0.0), -1.0, 1.0)


def adapt_step_size(inner: optax.GradientTransformation, *, rate: float,
                    max_log_scale: float = ADAPT_MAX_LOG_SCALE,
                    per_element: bool = False) -> optax.GradientTransformationExtraArgs:
    """Wraps ``inner`` so that each tensor's (or with ``per_element`` each element's) update is
    scaled by its adapted step multiplier (see the module docstring); extra arguments
    (``value=``, ``valid_loss=``) pass through."""
    if not rate >= 0.0:
        raise ValueError(f"rate must be non-negative, got {rate}")
    if not max_log_scale >= 0.0:
        raise ValueError(f"max_log_scale must be non-negative, got {max_log_scale}")
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        return StepAdaptationState(
            inner=inner.init(params),
            previous=jax.tree_util.tree_map(jnp.zeros_like, params),
            log_scale=jax.tree_util.tree_map(
                lambda p: jnp.zeros(p.shape if per_element else (), jnp.float32), params))

    def update_fn(grads, state, params=None, **extra):
        updates, inner_state = inner.update(grads, state.inner, params, **extra)

        treedef = jax.tree_util.tree_structure(updates)
        outs, scales = [], []
        for u, g, previous, log_scale in zip(
                treedef.flatten_up_to(updates), treedef.flatten_up_to(grads),
                treedef.flatten_up_to(state.previous), treedef.flatten_up_to(state.log_scale)):
            if u.size:
                signal = (descent_agreement if per_element else descent_cosine)(g, previous)
                log_scale = jnp.clip(log_scale + rate * signal, -max_log_scale, max_log_scale)
                u = (u * jnp.exp(log_scale)).astype(u.dtype)
            outs.append(u)
            scales.append(log_scale)
        updates = treedef.unflatten(outs)
        return updates, StepAdaptationState(inner_state, updates, treedef.unflatten(scales))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)

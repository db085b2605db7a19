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

The rate may follow a schedule of the step count. ``early_rate_schedule`` gives a fast rate for
the first steps and a slow one (or none) after: on easy tasks a run's mean loss is decided in its
first few dozen steps, where tuned Adam starts at the task's own learning rate and a
hyperparameter-free rule starts at one scale for all tasks; a fast early rate lets the
multipliers find the task's scale within a few steps and then leaves them there.
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
    count: jax.Array  # steps taken (the rate schedule's argument)


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


def early_rate_schedule(rate: float, *, early_rate: float, early_steps: int) -> optax.Schedule:
    """``early_rate`` for the first ``early_steps`` steps, then ``rate``: the multipliers find a
    task's step scale in the first steps, where a run's mean loss is mostly decided, and then
    move slowly or (``rate`` 0) stay where they are."""
    for name, value in (("rate", rate), ("early_rate", early_rate)):
        if not value >= 0.0:
            raise ValueError(f"{name} must be non-negative, got {value}")
    if isinstance(early_steps, bool) or not isinstance(early_steps, int) or early_steps < 0:
        raise ValueError(f"early_steps must be an integer >= 0, got {early_steps!r}")
    return lambda count: jnp.where(count < early_steps, early_rate, rate)


def adapt_step_size(inner: optax.GradientTransformation, *, rate: float | optax.Schedule,
                    max_log_scale: float = ADAPT_MAX_LOG_SCALE,
                    min_log_scale: float | None = None,
                    per_element: bool = False) -> optax.GradientTransformationExtraArgs:
    """Wraps ``inner`` so that each tensor's (or with ``per_element`` each element's) update is
    scaled by its adapted step multiplier (see the module docstring); extra arguments
    (``value=``, ``valid_loss=``) pass through. ``rate`` is a number or a schedule of the step
    count (e.g. ``early_rate_schedule``). The log multiplier stays in ``[min_log_scale,
    max_log_scale]``; ``min_log_scale`` defaults to ``-max_log_scale``, and 0 lets it only grow
    the rule's steps."""
    if not callable(rate) and not rate >= 0.0:
        raise ValueError(f"rate must be non-negative, got {rate}")
    if not max_log_scale >= 0.0:
        raise ValueError(f"max_log_scale must be non-negative, got {max_log_scale}")
    lowest = -max_log_scale if min_log_scale is None else min_log_scale
    if not -max_log_scale <= lowest <= 0.0:
        raise ValueError(f"min_log_scale must be in [-max_log_scale, 0], got {min_log_scale}")
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        return StepAdaptationState(
            inner=inner.init(params),
            previous=jax.tree_util.tree_map(jnp.zeros_like, params),
            log_scale=jax.tree_util.tree_map(
                lambda p: jnp.zeros(p.shape if per_element else (), jnp.float32), params),
            count=jnp.zeros((), jnp.int32))

    def update_fn(grads, state, params=None, **extra):
        updates, inner_state = inner.update(grads, state.inner, params, **extra)

        treedef = jax.tree_util.tree_structure(updates)
        step_rate = rate(state.count) if callable(rate) else rate
        outs, scales = [], []
        for u, g, previous, log_scale in zip(
                treedef.flatten_up_to(updates), treedef.flatten_up_to(grads),
                treedef.flatten_up_to(state.previous), treedef.flatten_up_to(state.log_scale)):
            if u.size:
                signal = (descent_agreement if per_element else descent_cosine)(g, previous)
                log_scale = jnp.clip(log_scale + step_rate * signal, lowest, max_log_scale)
                u = (u * jnp.exp(log_scale)).astype(u.dtype)
            outs.append(u)
            scales.append(log_scale)
        updates = treedef.unflatten(outs)
        return updates, StepAdaptationState(inner_state, updates, treedef.unflatten(scales),
                                            optax.safe_int32_increment(state.count))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)

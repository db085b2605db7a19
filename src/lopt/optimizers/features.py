"""Features shared by the learned optimizers: accumulators, dynamic clipping, loss statistics,
per-element and per-tensor inputs.

Everything here is scale-robust by construction: gradients from 1e-10 to 1e10 give the same
normalised features, and a non-finite gradient element is replaced by zero before it reaches
any state, so one bad step cannot poison the optimizer for ever.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

#: Momentum and second-moment decays of the paper (no bias correction).
DECAYS = (0.5, 0.9, 0.99, 0.999, 0.9999)
#: Timescales of the sinusoidal step features.
TIMESCALES = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
EPS = 1e-30
LOSS_DECAY = 0.95
CLIP_DECAY = 0.99


@jax.custom_jvp
def sqrt0(x):
    """``sqrt`` whose derivative at 0 is 0 instead of infinite, so that meta-gradients through
    an all-zero tensor (a zero-initialised bias, a dead unit) stay finite; values are sqrt's."""
    return jnp.sqrt(x)


@sqrt0.defjvp
def _sqrt0_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    y = jnp.sqrt(x)
    return y, jnp.where(x > 0, 0.5 / jnp.where(x > 0, y, 1.0), 0.0) * t


@jax.custom_jvp
def ratio_rsqrt(m, v):
    """``m / sqrt(v)`` for ``v > 0``, whose derivative is computed without ``v ** -1.5`` (which
    overflows float32 for ``v`` near ``EPS`` and turns zero tangents into NaN)."""
    return m * jax.lax.rsqrt(v)


@ratio_rsqrt.defjvp
def _ratio_rsqrt_jvp(primals, tangents):
    (m, v), (tm, tv) = primals, tangents
    r = jax.lax.rsqrt(v)
    y = m * r
    return y, tm * r - 0.5 * tv * (y * (1.0 / v))


class Accumulators(NamedTuple):
    """Per-element momentum ``m`` and second moment ``v`` at every decay: ``[len(DECAYS), *shape]``."""

    m: jax.Array
    v: jax.Array


class LossStats(NamedTuple):
    """Running mean and variance of the training loss (exponential moving averages)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array


def sanitise(g: jax.Array) -> jax.Array:
    """Float32 gradient with non-finite elements replaced by zero."""
    g = g.astype(jnp.float32)
    return jnp.where(jnp.isfinite(g), g, 0.0)


def dynamic_clip(g, ms, step, *, multiple: float, decay: float = CLIP_DECAY):
    """Clips ``g`` at ``multiple`` times the running RMS of the tensor's gradient.

    ``ms`` is the running mean square (a scalar per tensor). At the first step it starts at the
    current mean square, so nothing is clipped by an empty history. Returns ``(clipped, ms)``.
    """
    current = _mean_square(g)
    ms = jnp.where(step == 0, current, decay * ms + (1 - decay) * current)
    bound = multiple * sqrt0(ms)
    return jnp.clip(g, -bound, bound), ms


def _rescale(largest):
    """The rescaling factor of ``rms``: the result does not depend on it, so neither does its
    derivative (through it, ``EPS ** 2`` would underflow and give 0 / 0)."""
    return jax.lax.stop_gradient(largest + EPS)


def _mean_square(x):
    """Mean of ``x**2`` computed without overflow or underflow (rescaled by the max)."""
    scale = _rescale(jnp.max(jnp.abs(x)))
    return scale**2 * jnp.mean(jnp.square(x / scale)) if x.size else jnp.zeros(())


def rms(x, axis=None, keepdims=False):
    """Root mean square, rescaled by the max so that 1e-20 and 1e20 values both work."""
    scale = _rescale(jnp.max(jnp.abs(x), axis=axis, keepdims=True))
    out = scale * sqrt0(jnp.mean(jnp.square(x / scale), axis=axis, keepdims=True))
    return out if keepdims else jnp.squeeze(out, axis=axis)


def update_accumulators(acc: Accumulators, g: jax.Array) -> Accumulators:
    decays = jnp.asarray(DECAYS, jnp.float32).reshape((-1,) + (1,) * g.ndim)
    m = decays * acc.m + (1 - decays) * g
    v = decays * acc.v + (1 - decays) * jnp.square(g)
    return Accumulators(m, v)


def preprocess(g_leaves, acc_leaves, ms_leaves, live, step, *, multiple: float):
    """Per live leaf: sanitise, dynamically clip and accumulate its gradient.

    Returns new lists ``(grads, accumulators, clip mean squares)``; dead (empty) leaves keep
    their inputs.
    """
    gs, accs, mss = list(g_leaves), list(acc_leaves), list(ms_leaves)
    for i in live:
        gs[i], mss[i] = dynamic_clip(sanitise(g_leaves[i]), ms_leaves[i], step, multiple=multiple)
        accs[i] = update_accumulators(acc_leaves[i], gs[i])
    return gs, accs, mss


def init_accumulators(shape) -> Accumulators:
    z = jnp.zeros((len(DECAYS), *shape), jnp.float32)
    return Accumulators(z, z)


def init_loss_stats() -> LossStats:
    return LossStats(jnp.zeros(()), jnp.zeros(()), jnp.zeros((), jnp.int32))


def loss_features(stats: LossStats, value, valid_value=None):
    """Clipped z-scores of the training loss and (if given) the validation loss, both normalised
    by the running statistics of the training loss; plus a flag saying a validation loss arrived.

    Returns ``(features [3], new_stats)``. A missing or non-finite loss gives zero features and
    leaves the statistics unchanged.
    """
    if value is None:
        return jnp.zeros((3,)), stats
    value = jnp.asarray(value, jnp.float32)
    ok = jnp.isfinite(value)
    value = jnp.where(ok, value, 0.0)
    first = stats.count == 0
    mean = jnp.where(first, value, stats.mean)
    std = sqrt0(stats.var) + 1e-8 * (1.0 + jnp.abs(mean))
    z = jnp.where(first | ~ok, 0.0, jnp.clip((value - mean) / std, -5.0, 5.0))
    if valid_value is None:
        zv, has_valid = jnp.zeros(()), jnp.zeros(())
    else:
        valid_value = jnp.asarray(valid_value, jnp.float32)
        v_ok = jnp.isfinite(valid_value) & ~first
        zv = jnp.where(v_ok, jnp.clip((valid_value - mean) / std, -5.0, 5.0), 0.0)
        has_valid = v_ok.astype(jnp.float32)
    delta = value - mean
    new_mean = mean + (1 - LOSS_DECAY) * delta
    new_var = jnp.where(first, 0.0, LOSS_DECAY * (stats.var + (1 - LOSS_DECAY) * delta**2))
    new = LossStats(jnp.where(ok, new_mean, stats.mean), jnp.where(ok, new_var, stats.var),
                    stats.count + ok.astype(jnp.int32))
    return jnp.stack([z, zv, has_valid]), new


def step_features(step) -> jax.Array:
    """Sinusoidal features of the step count at timescales 1 to 1e5: ``[2 * len(TIMESCALES)]``."""
    t = jnp.asarray(step, jnp.float32)
    phases = t / jnp.asarray(TIMESCALES, jnp.float32)
    return jnp.concatenate([jnp.sin(phases), jnp.cos(phases)])


#: Number of per-element input channels (``per_element.features``).
NUM_ELEMENT_FEATURES = 3 + 4 * len(DECAYS)


def _summary(x):
    """Permutation-invariant summary of a tensor: mean log-magnitude, mean sign, log variance."""
    axes = tuple(range(1, x.ndim))
    logmag = jnp.mean(jnp.log(jnp.abs(x) + 1e-30), axis=axes)
    sign = jnp.mean(jnp.sign(x), axis=axes)
    centred = x - jnp.mean(x, axis=axes, keepdims=True)
    logvar = 2 * jnp.log(rms(centred.reshape(x.shape[0], -1), axis=1) + 1e-30)
    return jnp.concatenate([0.1 * logmag, sign, 0.1 * logvar])


#: Length of ``alignment_features``: one per momentum decay.
NUM_ALIGNMENT_FEATURES = len(DECAYS)


def alignment_features(g, m_prev) -> jax.Array:
    """Cosine between the tensor's gradient and each of its momenta before this step: ``[5]``.

    Near 1 the gradient keeps pointing the same way (the steps could be larger), below 0 it
    has turned back (they overshoot): the signal that step-size adaptation (hypergradient
    descent, D-adaptation) reads, here as an input of the per-tensor LSTM. A zero momentum (the
    first step) gives 0. Both sides are rescaled by their max, so any magnitude works.
    """
    g = g.reshape(1, -1) / _rescale(jnp.max(jnp.abs(g)))
    m = m_prev.reshape(m_prev.shape[0], -1)
    m = m / _rescale(jnp.max(jnp.abs(m), axis=1, keepdims=True))
    dots = jnp.sum(g * m, axis=1)
    # After the rescaling a nonzero side has a squared norm of at least about 1.
    norms = sqrt0(jnp.sum(jnp.square(g))) * sqrt0(jnp.sum(jnp.square(m), axis=1))
    ok = norms > 0.5
    return jnp.where(ok, dots / jnp.where(ok, norms, 1.0), 0.0)


#: Length of ``tensor_features``.
NUM_TENSOR_FEATURES = 3 * (2 * len(DECAYS) + 1) + 2 + 4


def tensor_features(g, p, acc: Accumulators) -> jax.Array:
    """Per-tensor inputs of the LSTM: summaries of momenta, second moments and values; log
    norms of weights and gradients; log size, log of the first and last dimension; is-scalar."""
    p = p.astype(jnp.float32)
    stats = [_summary(acc.m), _summary(acc.v), _summary(p.reshape(1, -1))]
    norms = jnp.log(jnp.stack([rms(p.reshape(-1)), rms(g.reshape(-1))]) + 1e-30)
    # logs span about -70..+50: a tenth keeps the LSTM's inputs O(1)
    return jnp.concatenate([*stats, 0.1 * norms, size_features(p)])


def size_features(p) -> jax.Array:
    """Tenths of log size, log first and last dimension; and is-scalar: ``[4]`` (static)."""
    shape = p.shape or (1,)
    logs = [0.1 * math.log(max(d, 1)) for d in (p.size, shape[0], shape[-1])]
    return jnp.asarray(logs + [float(p.ndim == 0)], jnp.float32)

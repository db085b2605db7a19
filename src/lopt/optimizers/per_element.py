"""The per-element half of a learned optimizer: normalised features and the per-element MLP,
computed in cache-sized chunks.

Each feature channel is divided by its RMS over the whole tensor, so the scales are reduced
first (a pass over gradient, parameter and accumulators); for a large tensor, dividing by them
is folded into the first layer's weights. Then the elements are processed
``CHUNK`` at a time: features, three matrix products and the step for a chunk stay in cache,
instead of streaming a dozen ``[32, elements]`` intermediates through memory; elements are
columns there (short, wide products). Small tensors are concatenated and handled in one piece
with elements as rows, the faster layout for the small products batched over particles in
meta-training (``benchmarks/results/meta.md``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lopt.optimizers.features import DECAYS, EPS, ratio_rsqrt, rms, sqrt0
from lopt.optimizers.nets import per_element_mlp

#: Elements per chunk: a [32, CHUNK] float32 activation is 1 MiB.
CHUNK = 8192
#: Raw rows per element: gradient, parameter, momenta, second moments.
NUM_RAW = 2 + 2 * len(DECAYS)
#: The least RMS of a derived channel (``channel_scales``): its squares stay far above
#: float32's underflow, so a direct float32 sum is exact to about 1e-8.
DERIVED_FLOOR = 1e-15
#: Index of the momentum-0.9 ``m / sqrt(v)`` channel in ``features``.
ADAM_LIKE_CHANNEL = 3 + len(DECAYS) + 1
#: Guards on the learned step, inactive in ordinary training (``per_element_outputs``).
MAX_LOG_SCALE = 5.0
STALL_RMS = 1e-3
COLLAPSE_RATIO = 0.03
#: Index of the first second-moment channel (decay ``DECAYS[0]``) in ``features``.
SECOND_MOMENT_CHANNEL = 3 + 2 * len(DECAYS)


def raw_rows(g, p, acc) -> jax.Array:
    """``[NUM_RAW, n]``: gradient, parameter, momenta and second moments of one tensor."""
    n = g.size
    return jnp.concatenate([g.reshape(1, n), p.astype(jnp.float32).reshape(1, n),
                            acc.m.reshape(len(DECAYS), n), acc.v.reshape(len(DECAYS), n)])


def _split(raw):
    k = len(DECAYS)
    return raw[0:1], raw[1:2], raw[2:2 + k], raw[2 + k:]


def _derived(p, m, v):
    """The bounded channels: log|parameter|, momenta / sqrt(second moments) (at most 1 in
    magnitude) and rsqrt(second moments) (at most 1e8)."""
    vs = v + EPS
    return jnp.log(jnp.abs(p) + 1e-8), ratio_rsqrt(m, vs), jax.lax.rsqrt(vs + 1e-16)


def _channels(raw):
    """The 23 feature channels ``[23, k]`` from raw rows ``[NUM_RAW, k]``: gradient, parameter,
    log|parameter|, momenta, momenta / sqrt(second moments), second moments, their rsqrt."""
    g, p, m, v = _split(raw)
    logp, mr, r = _derived(p, m, v)
    return jnp.concatenate([g, p, logp, m, mr, v, r])


def channel_scales(raw) -> jax.Array:
    """``[23]``: each channel's RMS over the tensor.

    The raw rows can hold any float32 magnitude, so their RMS is rescaled by the max (two
    passes); a raw row below 1e-30 counts as zero. The derived channels are bounded above, so
    their mean square is summed directly, in the same pass that computes them; their RMS is
    floored at ``DERIVED_FLOOR``. Below it the channel carries no signal (``m / sqrt(v)`` that
    small means the gradient has vanished), the float32 squares would underflow, and dividing
    by the underflowed RMS would turn rounding residue into features of 1e11.
    """
    g, p, m, v = _split(rms(raw, axis=1))
    logp, mr, r = (jnp.maximum(sqrt0(jnp.mean(jnp.square(c), axis=1)), DERIVED_FLOOR)
                   for c in _derived(*_split(raw)[1:]))
    return jnp.concatenate([g, p, logp, m, mr, v, r]) + 1e-30


def features(raw, scales) -> jax.Array:
    """Normalised per-element inputs ``[23, k]`` (one element per column) of raw rows
    ``[NUM_RAW, k]``."""
    return _channels(raw) * (1.0 / scales)[:, None]


def _apply(layers, skip, x, bias, exp_mult, step_mult, max_log_scale, *, columns):
    """Steps ``[k]`` and the last hidden layer of features ``x`` (``[23, k]`` with
    ``columns``, else ``[k, 23]``)."""
    out, hidden = per_element_mlp(layers, x, bias, columns=columns)
    d, a = (out[0] + skip @ x, out[1]) if columns else (out[:, 0] + x @ skip, out[:, 1])
    return d * jnp.exp(jnp.minimum(exp_mult * a, max_log_scale)) * step_mult, hidden


def per_element_outputs(layers, skip, raws, biases, *, exp_mult: float, step_mult: float,
                        max_log_scale: float = MAX_LOG_SCALE, stall_rms: float = STALL_RMS,
                        collapse_ratio: float = COLLAPSE_RATIO):
    """Steps and feedback summaries for every tensor.

    ``raws`` is a list of ``[NUM_RAW, n_i]`` arrays (``raw_rows``), ``biases`` ``[tensors,
    hidden]`` the per-tensor context of the first layer. Returns the flat steps of each tensor
    and ``[tensors, hidden]`` means of the last hidden layer.

    Two guards keep the step sane outside what meta-training saw. ``exp_mult * a`` is clipped
    above at ``max_log_scale`` (a magnitude factor of at most e^5, about 150), so that no
    feature can overflow ``exp`` into an infinite step. And where a tensor's RMS of the
    momentum-0.9 ``m / sqrt(v)`` is below ``stall_rms`` (it is at least about 0.2 while the
    gradient carries any signal, noise included) its step shrinks in proportion: once the
    gradient has vanished (a loss of exactly zero), the parameters stop, as Adam's do, instead
    of drifting on features that only the normalisation keeps at unit scale. Likewise where the
    gradient has collapsed without vanishing: where its recent RMS (second moment at decay 0.9)
    has fallen below ``collapse_ratio`` times its long-run RMS (decay 0.9999) the step shrinks in
    proportion, as Adam's does once the gradient is far below its epsilon. The normalised
    features cannot tell a converged model from a training one, so without this a model whose
    loss has reached zero (a separable classification task) kept stepping at full size, grew its
    weights without end and bounced out of the minimum (``benchmarks/results/lopt-10k``).
    While a model still trains the ratio stays above 1 (measured over 2,000 steps on six test
    tasks: a 1-D convnet, a language model, an autoencoder, a quadratic, a regression and a
    test function; a converged MLP's falls to 1e-4).
    """
    steps, means = [None] * len(raws), [None] * len(raws)
    scales = [channel_scales(raw) for raw in raws]
    args = (exp_mult, step_mult, max_log_scale)
    small = [i for i, r in enumerate(raws) if r.shape[1] <= CHUNK]
    for i, raw in enumerate(raws):
        if i not in small:
            steps[i], means[i] = _chunked(layers, skip, raw, scales[i], biases[i], *args)
    if small:
        # Small tensors (all of them in meta-training) share one row-layout pass.
        xs = [features(raws[i], scales[i]).T for i in small]
        sizes = [x.shape[0] for x in xs]
        x = jnp.concatenate(xs) if len(xs) > 1 else xs[0]
        rows = jnp.concatenate([jnp.broadcast_to(biases[i], (n, biases.shape[1]))
                                for i, n in zip(small, sizes)])
        step, hidden = _apply(layers, skip, x, rows, *args, columns=False)
        start = 0
        for i, n in zip(small, sizes):
            steps[i] = step[start:start + n]
            means[i] = jnp.mean(hidden[start:start + n], axis=0)
            start += n
    steps = [step * stall_factor(s, stall_rms, collapse_ratio) for step, s in zip(steps, scales)]
    return steps, jnp.stack(means)


def stall_factor(scales, stall_rms: float, collapse_ratio: float) -> jax.Array:
    """A tensor's step factor from its ``channel_scales``: 1 unless its gradient has vanished
    or collapsed (see ``per_element_outputs``)."""
    vanished = jnp.minimum(1.0, scales[ADAM_LIKE_CHANNEL] / stall_rms)
    v = SECOND_MOMENT_CHANNEL
    recent = sqrt0(scales[v + 1] / scales[v + len(DECAYS) - 1])  # decay 0.9 over 0.9999
    return vanished * jnp.minimum(1.0, recent / collapse_ratio)


def _chunked(layers, skip, raw, scales, bias, *args):
    """One large tensor, ``CHUNK`` elements at a time (plus a direct tail)."""
    # Dividing each channel by its scale is folded into the first layer and the skip, which
    # read the raw channels: one pass over the elements fewer.
    inv = 1.0 / scales
    layers = [{"w": layers[0]["w"] * inv[:, None], "b": layers[0]["b"]}, *layers[1:]]
    skip = skip * inv
    n = raw.shape[1]
    full = n // CHUNK * CHUNK
    blocks = raw[:, :full].reshape(NUM_RAW, n // CHUNK, CHUNK).transpose(1, 0, 2)

    def body(block):
        step, hidden = _apply(layers, skip, _channels(block), bias, *args, columns=True)
        return step, jnp.sum(hidden, axis=1)

    step, sums = jax.lax.map(body, blocks)
    step, total = step.reshape(-1), jnp.sum(sums, axis=0)
    if full < n:
        tail, hidden = _apply(layers, skip, _channels(raw[:, full:]), bias, *args,
                              columns=True)
        step = jnp.concatenate([step, tail])
        total = total + jnp.sum(hidden, axis=1)
    return step, total / n

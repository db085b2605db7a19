"""The chunked per-element pipeline (elements as columns) computes what the one-piece version
(elements as rows) does."""

import jax
import jax.numpy as jnp
import numpy as np

from lopt.optimizers import Hierarchical, per_element
from lopt.optimizers.features import init_accumulators, update_accumulators


def _raw(n, key):
    k = jax.random.split(key, 3)
    g, p = jax.random.normal(k[0], (n,)), jax.random.normal(k[1], (n,))
    acc = update_accumulators(init_accumulators((n,)), g)
    acc = update_accumulators(acc, jax.random.normal(k[2], (n,)))
    return per_element.raw_rows(g, p, acc)


def test_chunks_match_the_whole(monkeypatch):
    theta = Hierarchical().init(jax.random.key(0))
    raws = [_raw(1000, jax.random.key(1)), _raw(37, jax.random.key(2)), _raw(5, jax.random.key(3))]
    biases = jax.random.normal(jax.random.key(4), (3, 32))
    kw = dict(exp_mult=1e-3, step_mult=1e-3)
    whole, whole_means = per_element.per_element_outputs(theta["ffn"], theta["skip"], raws,
                                                         biases, **kw)
    monkeypatch.setattr(per_element, "CHUNK", 128)  # 1000 = 7 chunks + a tail of 104
    chunked, chunked_means = per_element.per_element_outputs(theta["ffn"], theta["skip"], raws,
                                                             biases, **kw)
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(whole_means, chunked_means, rtol=1e-5, atol=1e-6)


def test_features_are_scale_free():
    raw = _raw(64, jax.random.key(5))
    scaled = raw.at[0].multiply(1e6).at[2:7].multiply(1e6).at[7:].multiply(1e12)
    a = per_element.features(raw, per_element.channel_scales(raw))
    b = per_element.features(scaled, per_element.channel_scales(scaled))
    # gradient, momenta, m/sqrt(v) and v channels are invariant to the gradient's scale
    for channel in [0, *range(3, 18)]:
        np.testing.assert_allclose(a[channel], b[channel], rtol=1e-3, atol=1e-5)
    assert jnp.all(jnp.isfinite(b))


def test_features_of_vanished_momenta_stay_bounded():
    """Momenta of 1e-35 over zero second moments: ``m / sqrt(v)`` is about 1e-20, whose float32
    square underflows. A feature is a channel over its RMS, so at most sqrt(n) in magnitude;
    an underflowed RMS would make it 1e10."""
    n = 64
    raw = _raw(n, jax.random.key(5))
    k = len(per_element.DECAYS)
    raw = raw.at[2:2 + k].set(1e-35).at[2 + k:].set(0.0)  # momenta, second moments
    x = jax.jit(lambda r: per_element.features(r, per_element.channel_scales(r)))(raw)
    assert np.isfinite(np.asarray(x)).all()
    assert float(jnp.abs(x).max()) <= np.sqrt(n) * (1 + 1e-5)

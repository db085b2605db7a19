"""Gradient-momentum alignment: cosines that are scale-free, zero without a momentum, and
differentiable everywhere."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.optimizers import features as F


def test_alignment_is_the_cosine_to_each_momentum():
    g = jnp.array([[1.0, 2.0], [3.0, -1.0]])
    other = jnp.array([[2.0, 0.0], [1.0, 1.0]])
    m = jnp.stack([g, -3 * g, jnp.zeros_like(g), other, 0.5 * g])
    want = float(jnp.sum(g * other) / (jnp.linalg.norm(g) * jnp.linalg.norm(other)))
    np.testing.assert_allclose(F.alignment_features(g, m), [1, -1, 0, want, 1], rtol=1e-6)


@pytest.mark.parametrize("scale", [1e-30, 1e-12, 1e12, 1e30])
def test_alignment_is_scale_free(scale):
    k1, k2 = jax.random.split(jax.random.key(0))
    g = jax.random.normal(k1, (40,))
    m = jax.random.normal(k2, (len(F.DECAYS), 40)) + g
    np.testing.assert_allclose(F.alignment_features(scale * g, m / scale),
                               F.alignment_features(g, m), rtol=1e-5)


def test_alignment_derivative_is_finite_at_zero():
    g = jnp.array([0.5, -1.0, 2.0])
    for m in (jnp.zeros((len(F.DECAYS), 3)), jnp.zeros((len(F.DECAYS), 3)).at[0].set(g)):
        jac = jax.jacfwd(F.alignment_features, argnums=(0, 1))(g, m)
        assert all(np.isfinite(np.asarray(j)).all() for j in jac)
    jac = jax.jacfwd(F.alignment_features)(jnp.zeros(3), jnp.ones((len(F.DECAYS), 3)))
    assert np.isfinite(np.asarray(jac)).all()

"""The learner's outer step: frozen entries stay put, unknown names are refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.meta.learner import Learner
from lopt.meta.worker import Estimate


def _theta():
    return {"lstm": {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}, "align": {"w": jnp.zeros((2, 4))}}


def test_trainable_updates_only_the_named_entries():
    theta = _theta()
    grad = jax.tree_util.tree_map(lambda a: jnp.full(a.shape, 0.5), theta)
    learner = Learner(theta, learning_rate=1e-2, trainable=["align"])
    for _ in range(3):
        learner.apply([Estimate(grad, learner.version, {})])
    np.testing.assert_array_equal(learner.theta["lstm"]["w"], theta["lstm"]["w"])
    np.testing.assert_array_equal(learner.theta["lstm"]["b"], theta["lstm"]["b"])
    np.testing.assert_allclose(learner.theta["align"]["w"], -0.03, rtol=1e-4)  # Adam: lr/step
    everything = Learner(theta, learning_rate=1e-2)
    everything.apply([Estimate(grad, 0, {})])
    assert not np.array_equal(everything.theta["lstm"]["w"], theta["lstm"]["w"])


def test_trainable_names_must_exist():
    with pytest.raises(ValueError, match="alignn"):
        Learner(_theta(), trainable=["alignn"])

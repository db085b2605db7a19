"""Step-size adaptation, per tensor and per element (``lopt.optimizers.step_adaptation``)."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt.optimizers import Hierarchical
from lopt.optimizers.step_adaptation import (StepAdaptationState, adapt_step_size,
                                             descent_cosine, early_rate_schedule)
from lopt.pretrained import load_pretrained


def _quadratic_run(tx, x0, steps):
    """Minimises 0.5 * |x|^2 with ``tx``; returns the iterates and the final state."""
    params = {"x": jnp.asarray(x0, jnp.float32)}
    state = tx.init(params)
    xs = []
    for _ in range(steps):
        grads = {"x": params["x"]}
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        xs.append(np.asarray(params["x"]))
    return np.stack(xs), state


def test_consistent_descent_grows_the_step_to_its_bound():
    # Plain steps of 1% of the distance: every new gradient still points the same way.
    inner = optax.sgd(0.01)
    tx = adapt_step_size(inner, rate=0.1, max_log_scale=math.log(8.0))
    xs, state = _quadratic_run(tx, [1.0, -2.0], 60)
    np.testing.assert_allclose(state.log_scale["x"], math.log(8.0), rtol=1e-6)
    plain, _ = _quadratic_run(inner, [1.0, -2.0], 60)
    assert np.abs(xs[-1]).max() < 0.1 * np.abs(plain[-1]).max()


def test_overshooting_steps_shrink_until_the_run_converges():
    # Steps of 2.5x the distance flip the sign and grow: plain SGD diverges.
    inner = optax.sgd(2.5)
    plain, _ = _quadratic_run(inner, [1.0], 40)
    assert np.abs(plain[-1]).max() > 1e5
    xs, state = _quadratic_run(adapt_step_size(inner, rate=0.2, max_log_scale=3.0), [1.0], 40)
    assert np.abs(xs[-1]).max() < 1e-3
    assert float(state.log_scale["x"]) < math.log(2.0 / 2.5)  # below the stable step


def test_first_step_is_the_inner_rule_and_extra_args_pass_through():
    seen = {}

    def update(updates, state, params=None, *, value=None, **extra):
        seen["value"] = value
        return jax.tree_util.tree_map(lambda g: -0.1 * g, updates), state

    inner = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)
    tx = adapt_step_size(inner, rate=0.5, max_log_scale=1.0)
    params = {"w": jnp.ones((3,)), "empty": jnp.zeros((0, 2))}
    grads = {"w": jnp.asarray([1.0, 2.0, 3.0]), "empty": jnp.zeros((0, 2))}
    updates, state = tx.update(grads, tx.init(params), params, value=jnp.asarray(4.0))
    assert float(seen["value"]) == 4.0
    np.testing.assert_allclose(updates["w"], [-0.1, -0.2, -0.3], rtol=1e-6)
    assert updates["empty"].shape == (0, 2)
    assert float(state.log_scale["w"]) == 0.0  # no previous update yet: cosine 0


def test_descent_cosine_is_scale_free_and_safe():
    g = jnp.asarray([1.0, -2.0, 0.5])
    np.testing.assert_allclose(descent_cosine(g, -g), 1.0, rtol=1e-6)
    np.testing.assert_allclose(descent_cosine(1e-30 * g, 1e30 * g), -1.0, rtol=1e-6)
    assert float(descent_cosine(g, jnp.zeros(3))) == 0.0
    bad = jnp.asarray([jnp.nan, jnp.inf, 1.0])
    np.testing.assert_allclose(descent_cosine(bad, jnp.asarray([5.0, 5.0, -1.0])),
                               1.0 / np.sqrt(51.0), rtol=1e-6)


def test_early_rate_moves_the_multiplier_then_the_late_rate_takes_over():
    # Consistent descent: the cosine is 1 from the second step on, so the log multiplier grows
    # by the rate in force at each step: 0.3 at steps 1-4 (step 0 has no previous update),
    # then 0.01 (a later rate of 0 would freeze it).
    schedule = early_rate_schedule(0.01, early_rate=0.3, early_steps=5)
    tx = adapt_step_size(optax.sgd(1e-3), rate=schedule, max_log_scale=10.0)
    _, state = _quadratic_run(tx, [1.0, -2.0], 5)
    np.testing.assert_allclose(state.log_scale["x"], 4 * 0.3, rtol=1e-5)
    assert int(state.count) == 5
    _, state = _quadratic_run(tx, [1.0, -2.0], 9)
    np.testing.assert_allclose(state.log_scale["x"], 4 * 0.3 + 4 * 0.01, rtol=1e-5)
    frozen = adapt_step_size(optax.sgd(1e-3), max_log_scale=10.0,
                             rate=early_rate_schedule(0.0, early_rate=0.3, early_steps=5))
    _, state = _quadratic_run(frozen, [1.0, -2.0], 9)
    np.testing.assert_allclose(state.log_scale["x"], 4 * 0.3, rtol=1e-5)


def test_min_log_scale_zero_only_grows_the_step():
    # Overshooting SGD (as above) would shrink its multiplier; bounded below at 0 it stays at 1
    # and the run diverges as plain SGD does, while consistent descent still grows it.
    grow_only = {"rate": 0.2, "max_log_scale": 3.0, "min_log_scale": 0.0}
    xs, state = _quadratic_run(adapt_step_size(optax.sgd(2.5), **grow_only), [1.0], 10)
    assert float(state.log_scale["x"]) == 0.0
    plain, _ = _quadratic_run(optax.sgd(2.5), [1.0], 10)
    np.testing.assert_allclose(xs, plain)
    _, state = _quadratic_run(adapt_step_size(optax.sgd(0.01), **grow_only), [1.0], 10)
    np.testing.assert_allclose(state.log_scale["x"], 9 * 0.2, rtol=1e-5)


def test_bad_arguments_are_refused():
    for lowest in (0.1, -2.0):
        with pytest.raises(ValueError, match="min_log_scale"):
            adapt_step_size(optax.sgd(1.0), rate=0.1, max_log_scale=1.0, min_log_scale=lowest)
    for kwargs in ({"early_rate": -0.1, "early_steps": 5}, {"early_rate": 0.1, "early_steps": -1},
                   {"early_rate": 0.1, "early_steps": 2.5}):
        with pytest.raises(ValueError, match="early"):
            early_rate_schedule(0.0, **kwargs)
    with pytest.raises(ValueError, match="rate"):
        adapt_step_size(optax.sgd(1.0), rate=-0.1, max_log_scale=1.0)
    with pytest.raises(ValueError, match="max_log_scale"):
        adapt_step_size(optax.sgd(1.0), rate=0.1, max_log_scale=float("nan"))


def test_hierarchical_wraps_only_when_asked():
    arch = Hierarchical()
    theta = arch.init(jax.random.key(0))
    params = {"w": jax.random.normal(jax.random.key(1), (4, 3)), "b": jnp.zeros((3,))}
    grads = jax.tree_util.tree_map(lambda p: jnp.ones_like(p) * 0.3, params)
    plain_tx = arch.optimizer(theta)
    adapted_tx = dataclasses.replace(arch, adapt_rate=0.05).optimizer(theta)
    assert not isinstance(plain_tx.init(params), StepAdaptationState)
    plain, ps = plain_tx.update(grads, plain_tx.init(params), params, value=jnp.asarray(1.0))
    adapted, s = adapted_tx.update(grads, adapted_tx.init(params), params,
                                   value=jnp.asarray(1.0))
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(adapted)):
        np.testing.assert_array_equal(a, b)  # step 0: multiplier 1
    # The same gradient again: the last step went along it, so every multiplier grows.
    params = optax.apply_updates(params, adapted)
    plain2, _ = plain_tx.update(grads, ps, params, value=jnp.asarray(1.0))
    adapted2, s = adapted_tx.update(grads, s, params, value=jnp.asarray(1.0))
    for name in params:
        assert 0.0 < float(s.log_scale[name]) <= 0.05 + 1e-7
        np.testing.assert_allclose(adapted2[name], plain2[name] * np.exp(s.log_scale[name]),
                                   rtol=1e-5)


def test_per_element_grows_the_flat_direction_and_shrinks_the_sharp_one():
    # 0.5 * (x0^2 + 100 x1^2) with SGD at 0.015: x0 creeps (steps of 1.5% of its distance),
    # x1 overshoots (x1 -> -0.5 x1 each step). One multiplier per tensor cannot serve both.
    curvature = jnp.asarray([1.0, 100.0])
    tx = adapt_step_size(optax.sgd(0.015), rate=0.1, max_log_scale=math.log(8.0),
                         per_element=True)
    params = {"x": jnp.asarray([1.0, 1.0])}
    state = tx.init(params)
    assert state.log_scale["x"].shape == (2,)
    for _ in range(40):
        updates, state = tx.update({"x": curvature * params["x"]}, state, params)
        params = optax.apply_updates(params, updates)
    log_scale = np.asarray(state.log_scale["x"])
    np.testing.assert_allclose(log_scale[0], math.log(8.0), rtol=1e-6)
    assert log_scale[1] < -0.2
    assert abs(float(params["x"][0])) < 0.2  # plain SGD: 0.985^40 = 0.55


def test_wrapping_the_shipped_optimizer_equals_its_built_in_adaptation():
    """``adapt_step_size(lopt.optimizer(), rate=r)`` (the README's way to add the adaptation to
    the shipped default) computes what the default's own ``adapt_rate=r`` does."""
    theta, learned, _ = load_pretrained()
    wrapped = adapt_step_size(lopt.optimizer(), rate=0.05)
    built_in = dataclasses.replace(learned, adapt_rate=0.05).optimizer(theta)
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.ones(4)}
    states = [tx.init(params) for tx in (wrapped, built_in)]
    for step in range(4):
        grads = jax.tree_util.tree_map(lambda p: p * (1.0 + step), params)
        out = [tx.update(grads, s, params, value=jnp.asarray(1.0 / (1 + step)))
               for tx, s in zip((wrapped, built_in), states)]
        (u1, s1), (u2, s2) = out
        for a, b in zip(jax.tree_util.tree_leaves(u1), jax.tree_util.tree_leaves(u2)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
        states = [s1, s2]
        params = optax.apply_updates(params, u1)
    assert any(abs(float(v)) > 0 for v in jax.tree_util.tree_leaves(states[0].log_scale))

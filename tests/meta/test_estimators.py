"""ES, PES and TBPTT against the true gradient on a problem where it can be computed exactly.

Inner problem: a vector w follows w <- w - lr * (A w) with lr = exp(theta), loss_t = 0.5 w^T A w,
meta-loss = mean over a horizon of T steps, unrolled in truncations of K steps. The smoothed
objective's gradient is (for small sigma) the autodiff gradient of the full unroll.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.meta.estimators import estimate, init_estimator_state

A = jnp.diag(jnp.array([1.0, 0.5, 0.1]))
W0 = jnp.array([1.0, -1.0, 2.0])
T, K = 20, 5


def full_objective(theta):
    def step(w, _):
        w = w - jnp.exp(theta["log_lr"]) * (A @ w) - _decay(theta) * w
        return w, 0.5 * w @ A @ w
    return jnp.mean(jax.lax.scan(step, W0, None, length=T)[1])


def _decay(theta):
    return jnp.exp(theta["log_decay"]) if "log_decay" in theta else 0.0


def unroll_fn(thetas, states):
    def one(theta, w):
        def step(w, _):
            w = w - jnp.exp(theta["log_lr"]) * (A @ w) - _decay(theta) * w
            return w, 0.5 * w @ A @ w
        w, losses = jax.lax.scan(step, w, None, length=K)
        return w, jnp.mean(losses)
    w, meta = jax.vmap(one)(thetas, states)
    return w, meta, jnp.zeros(meta.shape, bool)


def reset_fn(states, mask):
    return states


def _horizon_estimate(kind, theta, pairs, key):
    state = init_estimator_state(jnp.tile(W0, (pairs, 1)), theta)
    total = jax.tree_util.tree_map(jnp.zeros_like, theta)
    for i in range(T // K):
        g, state, _ = estimate(kind, unroll_fn, reset_fn, theta, state,
                               jax.random.fold_in(key, i), sigma=0.01)
        total = jax.tree_util.tree_map(lambda a, b: a + b / (T // K), total, g)
    return total


@pytest.fixture(scope="module")
def theta():
    return {"log_lr": jnp.array([np.log(0.3)], jnp.float32)[0:1].reshape(())}


def test_es_matches_the_gradient_on_a_single_truncation(theta):
    def first_truncation(theta):
        _, meta, _ = unroll_fn(jax.tree_util.tree_map(lambda a: a[None], theta), W0[None])
        return meta[0]

    true = jax.grad(first_truncation)(theta)["log_lr"]
    state = init_estimator_state(jnp.tile(W0, (20000, 1)), theta)
    g, _, _ = estimate("es", unroll_fn, reset_fn, theta, state, jax.random.key(0), sigma=0.01)
    assert float(g["log_lr"]) == pytest.approx(float(true), rel=0.05)


def test_pes_is_unbiased_over_truncations_where_truncated_es_is_not(theta):
    true = float(jax.grad(full_objective)(theta)["log_lr"])
    pes = float(_horizon_estimate("pes", theta, 20000, jax.random.key(1))["log_lr"])
    es = float(_horizon_estimate("es", theta, 20000, jax.random.key(1))["log_lr"])
    assert pes == pytest.approx(true, rel=0.1)
    assert abs(es - true) > 0.3 * abs(true)  # truncation bias: ES misses the state's dependence


def test_pes_points_along_the_gradient_of_two_meta_parameters():
    theta = {"log_lr": jnp.log(0.3), "log_decay": jnp.log(0.05)}
    true = jax.grad(full_objective)(theta)
    g = _horizon_estimate("pes", theta, 20000, jax.random.key(2))
    a = np.array([float(true["log_lr"]), float(true["log_decay"])])
    b = np.array([float(g["log_lr"]), float(g["log_decay"])])
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.98
    np.testing.assert_allclose(b, a, rtol=0.15)


def test_tbptt_is_the_exact_gradient_of_each_truncation():
    theta = {"log_lr": jnp.log(0.3), "log_decay": jnp.log(0.05)}
    starts = jnp.stack([W0, 2 * W0, -W0])  # three pairs, different states

    def truncation_loss(theta):
        thetas = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (3,)), theta)
        return jnp.mean(unroll_fn(thetas, starts)[1])

    state = init_estimator_state(starts, theta)
    g, new, meta = estimate("tbptt", unroll_fn, reset_fn, theta, state, jax.random.key(0),
                            sigma=0.01, max_norm=np.inf)
    true = jax.grad(truncation_loss)(theta)
    for k in theta:
        assert float(g[k]) == pytest.approx(float(true[k]), rel=1e-5)
    assert float(meta) == pytest.approx(float(truncation_loss(theta)), rel=1e-6)
    # both members of each pair advanced to the same state
    np.testing.assert_array_equal(new.states[:3], new.states[3:])
    assert not np.allclose(new.states[:3], starts)


def test_tbptt_clips_each_particles_gradient():
    theta = {"log_lr": jnp.log(0.3)}

    def particle_grad(w0):
        return jax.grad(lambda th: unroll_fn({"log_lr": th["log_lr"][None]}, w0[None])[1][0])(
            theta)["log_lr"]

    small, large = W0, 100 * W0  # the loss, and its gradient, scale with |w|^2
    g_small, g_large = float(particle_grad(small)), float(particle_grad(large))
    assert abs(g_small) < 0.5 < abs(g_large)
    state = init_estimator_state(jnp.stack([small, large]), theta)
    g, _, _ = estimate("tbptt", unroll_fn, reset_fn, theta, state, jax.random.key(0),
                       sigma=0.01, max_norm=0.5)
    assert float(g["log_lr"]) == pytest.approx((g_small + 0.5 * np.sign(g_large)) / 2, rel=1e-5)


def test_tbptt_drops_particles_whose_gradient_is_not_finite():
    theta = {"log_lr": jnp.log(0.3)}

    def diverging(thetas, states):  # the second particle's unroll blows up
        w, meta, done = unroll_fn(thetas, states)
        bad = jnp.arange(len(meta)) == 1
        return w, meta * jnp.where(bad, jnp.inf, 1.0), done

    state = init_estimator_state(jnp.stack([W0, W0]), theta)
    g, _, _ = estimate("tbptt", diverging, reset_fn, theta, state, jax.random.key(0),
                       sigma=0.01, max_norm=np.inf)
    g1, _, _ = estimate("tbptt", unroll_fn, reset_fn, theta,
                        init_estimator_state(W0[None], theta), jax.random.key(0), sigma=0.01,
                        max_norm=np.inf)
    assert float(g["log_lr"]) == pytest.approx(float(g1["log_lr"]) / 2, rel=1e-5)


def test_tbptt_over_truncations_has_the_truncation_bias_of_es(theta):
    true = float(jax.grad(full_objective)(theta)["log_lr"])
    tbptt = float(_horizon_estimate("tbptt", theta, 1, jax.random.key(1))["log_lr"])
    es = float(_horizon_estimate("es", theta, 20000, jax.random.key(1))["log_lr"])
    assert tbptt == pytest.approx(es, rel=0.05)  # the same truncated objective, without noise
    assert abs(tbptt - true) > 0.3 * abs(true)


def test_unknown_estimator(theta):
    state = init_estimator_state(W0[None], theta)
    with pytest.raises(ValueError, match="unknown estimator 'sgd'"):
        estimate("sgd", unroll_fn, reset_fn, theta, state, jax.random.key(0), sigma=0.01)

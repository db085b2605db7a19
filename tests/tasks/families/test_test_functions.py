"""2-D test functions: known minima, valid start points, gradient noise, Adam makes progress."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.tasks import get_family
from lopt.tasks.families.test_functions import FUNCTIONS, sample_start, shifted, start_is_valid

NAMES = tuple(FUNCTIONS)


def _task(function, start, noise_scale=0.0):
    return get_family("test_function").task(
        {"function": function, "start": list(start), "noise_scale": noise_scale})


def _grad(name, point):
    grad = jax.grad(lambda p: shifted(name, p[0], p[1]))
    return np.asarray(grad(jnp.asarray(point, jnp.float32)))


@pytest.mark.parametrize("name", NAMES)
def test_global_minima_are_zero_stationary_and_lowest(name):
    d = FUNCTIONS[name]
    for point in d.global_minima:
        assert shifted(name, *point, np) == pytest.approx(0.0, abs=1e-9)
        assert np.abs(_grad(name, point)).max() < 1e-2 * max(1.0, d.scale * 100)
    # Nothing in (a margin around) the start box is lower than the minimum.
    (xl, xh), (yl, yh) = d.box
    x, y = np.meshgrid(np.linspace(xl - 1, xh + 1, 301), np.linspace(yl - 1, yh + 1, 301))
    assert shifted(name, x, y, np).min() > -1e-9


@pytest.mark.parametrize("name", [n for n in NAMES if FUNCTIONS[n].local_minima])
def test_listed_local_minima_are_stationary_and_above_zero(name):
    for point in FUNCTIONS[name].local_minima:
        assert shifted(name, *point, np) > 0.1
        assert np.linalg.norm(_grad(name, point)) < 1e-2


@pytest.mark.parametrize("name", NAMES)
def test_sampled_starts_are_in_the_box_valid_and_order_one_to_hundred(name):
    rng = np.random.default_rng(0)
    (xl, xh), (yl, yh) = FUNCTIONS[name].box
    starts = np.array([sample_start(name, rng) for _ in range(200)])
    assert np.all((xl <= starts[:, 0]) & (starts[:, 0] <= xh))
    assert np.all((yl <= starts[:, 1]) & (starts[:, 1] <= yh))
    assert all(start_is_valid(name, *s) for s in starts)
    values = shifted(name, starts[:, 0], starts[:, 1], np)
    assert values.min() >= 0.5 and values.max() < 200 and np.median(values) > 1


def test_start_validity_rejects_minima_and_shallow_local_minima():
    assert not start_is_valid("rosenbrock", 1.0, 1.0)
    assert not start_is_valid("styblinski_tang", 2.75, 2.75)  # in the highest local minimum
    assert start_is_valid("styblinski_tang", 0.0, 4.0)
    assert not start_is_valid("rastrigin", 2.02, -1.0)
    assert start_is_valid("rastrigin", 2.4, -1.0)


def test_init_is_the_start_and_noise_only_moves_gradients():
    clean = _task("himmelblau", [0.5, -1.5])
    noisy = _task("himmelblau", [0.5, -1.5], noise_scale=0.3)
    params = clean.init(jax.random.key(0))
    np.testing.assert_allclose(params["xy"], [0.5, -1.5])
    keys = jax.random.split(jax.random.key(1), 512)

    def losses_and_grads(task):
        spec, hp = task.spec, task.hparams
        fn = jax.jit(jax.vmap(
            lambda k: jax.value_and_grad(lambda p: spec.loss(hp, p, {}, k))(params)))
        return fn(keys)

    l0, g0 = losses_and_grads(clean)
    l1, g1 = losses_and_grads(noisy)
    exact = _grad("himmelblau", [0.5, -1.5])
    assert float(clean.hparams["noise_std"]) == 0.0
    np.testing.assert_allclose(g0["xy"], np.broadcast_to(exact, (512, 2)), rtol=1e-5)
    std = float(noisy.hparams["noise_std"])
    assert std == pytest.approx(0.3 * np.linalg.norm(exact), rel=1e-4)
    assert np.asarray(g1["xy"] - exact).std() == pytest.approx(std, rel=0.1)
    np.testing.assert_allclose(l1, l0)  # loss values are exact, with or without noise
    assert float(l0[0]) == pytest.approx(shifted("himmelblau", 0.5, -1.5, np), rel=1e-5)


@functools.partial(jax.jit, static_argnums=0)
def _adam_first_and_last_losses(spec, hps, key):
    """Adam (lr 3e-3, 300 steps) on tasks of one spec with stacked hparams ``hps``."""
    opt = optax.adam(3e-3)

    def run(hp, key):
        params = spec.init(hp, key)

        def step(carry, k):
            p, state = carry
            updates, state = opt.update(jax.grad(lambda p: spec.loss(hp, p, {}, k))(p), state, p)
            return (optax.apply_updates(p, updates), state), None

        (final, _), _ = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, 300))
        return spec.loss(hp, params, {}, key), spec.loss(hp, final, {}, key)

    n = len(jax.tree_util.tree_leaves(hps)[0])
    return jax.vmap(run)(hps, jax.random.split(key, n))


@pytest.mark.parametrize("name", NAMES)
def test_adam_makes_progress_from_sampled_starts(name):
    rng = np.random.default_rng(1)
    noise = [0.0] * 8 + [0.5] * 8  # clean and at the largest sampled noise scale
    tasks = [_task(name, sample_start(name, rng), n) for n in noise]
    hps = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[t.hparams for t in tasks])
    first, last = map(np.asarray,
                      _adam_first_and_last_losses(tasks[0].spec, hps, jax.random.key(0)))
    assert np.all(np.isfinite(last))
    assert np.all(last < 0.95 * first - 1e-3), (first, last)


def test_sampled_configs():
    fam = get_family("test_function")
    cfgs = [fam.sample_config(np.random.default_rng(i)) for i in range(60)]
    assert all(json.loads(json.dumps(c)) == c for c in cfgs)
    assert {c["function"] for c in cfgs} == set(NAMES)
    noise = np.array([c["noise_scale"] for c in cfgs])
    assert 0.2 < np.mean(noise == 0) < 0.8 and noise.max() <= 0.5

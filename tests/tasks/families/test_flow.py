"""Normalising flows: invertibility, exact log-determinants, a density that integrates to one,
bounded couplings and the fixed 2-D data sets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.tasks import SPLITS, get_family
from lopt.tasks.families import flow
from lopt.tasks.families.flow import DENSITIES, MAX_LOG_SCALE, density_splits

BASE = {"density": "moons", "layers": 4, "hidden": 32, "activation": "tanh", "batch_size": 64,
        "train_fraction": 1.0, "init_kind": 0, "init_scale": 1.0}


def _task(**overrides):
    return get_family("flow").task({**BASE, **overrides})


def _random_params(task, scale, seed=0, out_scale=1.0):
    """Parameters drawn by NumPy (no compiled init), large enough that every layer bends space;
    ``out_scale`` shrinks the conditioners' output layers."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(task.init, jax.random.key(0))
    params = jax.tree_util.tree_map(
        lambda s: jnp.asarray(scale * rng.normal(size=s.shape), jnp.float32), shapes)
    return [[*mlp[:-1], jax.tree_util.tree_map(lambda a: out_scale * a, mlp[-1])]
            for mlp in params]


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_inverse_inverts_and_log_det_is_exact(activation):
    params = _random_params(_task(activation=activation), 0.5)
    x = jax.random.normal(jax.random.key(0), (64, 2)) * 1.5

    @jax.jit
    def check(params, x):
        z, log_det = flow.forward(params, x, activation)
        jac = jax.vmap(jax.jacfwd(lambda p: flow.forward(params, p[None], activation)[0][0]))(x)
        return z, log_det, flow.inverse(params, z, activation), jnp.linalg.det(jac)

    z, log_det, x_back, det = check(params, x)
    assert float(jnp.abs(z - x).max()) > 0.1  # not the identity
    np.testing.assert_allclose(x_back, x, rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(log_det, jnp.log(jnp.abs(det)), atol=1e-4)


def test_density_integrates_to_one():
    params = _random_params(_task(layers=6), 0.5, seed=1, out_scale=0.1)
    edges = np.linspace(-10, 10, 401)
    centres = (edges[1:] + edges[:-1]) / 2
    grid = np.stack(np.meshgrid(centres, centres), -1).reshape(-1, 2)
    density = jnp.exp(jax.jit(flow.log_prob, static_argnums=2)(params, jnp.asarray(grid), "tanh"))
    mass = float(density.sum()) * (edges[1] - edges[0]) ** 2
    assert abs(mass - 1.0) < 0.005
    base = np.exp(-0.5 * (grid ** 2).sum(1)) / (2 * np.pi)
    assert np.abs(np.asarray(density) - base).max() > 0.03  # a real change of variables


def test_couplings_stay_bounded_for_huge_parameters():
    layers = 6
    params = _random_params(_task(layers=layers, activation="relu"), 100.0)
    x = jax.random.normal(jax.random.key(2), (256, 2))
    z, log_det = flow.forward(params, x, "relu")
    assert bool(jnp.all(jnp.isfinite(z)))
    assert float(jnp.abs(log_det).max()) <= layers * MAX_LOG_SCALE + 1e-4
    assert float(jnp.abs(log_det).max()) > 0.5 * MAX_LOG_SCALE  # the bound is actually reached


def test_loss_is_mean_negative_log_likelihood():
    task = _task()
    params = _random_params(task, 0.3)
    batch = task.eval_batch("valid", 128)
    loss_and_log_p = jax.jit(lambda p, x: (task.loss(p, {"x": x}, jax.random.key(0)),
                                           flow.log_prob(p, x, "tanh")))
    loss, log_p = loss_and_log_p(params, batch["x"])
    np.testing.assert_allclose(loss, -np.mean(np.asarray(log_p, np.float64)), rtol=1e-5)
    # With zero outputs the flow is the identity, and the loss is the standard-normal NLL of
    # standardised data: log(2 pi) + 1.
    identity = _random_params(task, 0.3, out_scale=0.0)
    np.testing.assert_allclose(loss_and_log_p(identity, density_splits("moons")["train"]["x"])[0],
                               np.log(2 * np.pi) + 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", DENSITIES)
def test_densities_are_fixed_standardised_and_split(name):
    splits = density_splits(name)
    assert density_splits(name) is splits  # cached
    sizes = [len(splits[s]["x"]) for s in SPLITS]
    assert sum(sizes) == flow.NUM_POINTS and sizes[0] == 0.6 * flow.NUM_POINTS
    train = splits["train"]["x"]
    assert train.dtype == np.float32 and train.shape[1] == 2
    np.testing.assert_allclose(train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(flow.sample_density(name, 50), flow.sample_density(name, 50))


def test_densities_differ_and_are_not_gaussian():
    """Every density has structure a Gaussian misses: the kurtosis or the mean |x| differ."""
    stats = []
    for name in DENSITIES:
        x = density_splits(name)["train"]["x"].astype(np.float64)
        stats.append(np.round([np.abs(x).mean(), (x ** 4).mean()], 2))
    assert len({tuple(s) for s in stats}) == len(DENSITIES)
    gaussian = np.array([np.sqrt(2 / np.pi), 3.0])
    assert all(np.abs(s - gaussian).max() > 0.05 for s in stats)

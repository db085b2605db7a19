"""VAEs: [0, 1] digits on the shared split, the loss is the exact negative ELBO, key noise."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.tasks import SPLITS, data, get_family
from lopt.tasks.families.vae import MIN_STD, digits_unit_interval, gaussian_kl

BASE = {"latent": 8, "hidden": [64], "activation": "gelu", "batch_size": 32,
        "train_fraction": 1.0, "init_kind": 1, "init_scale": 1.0}


def _task(**overrides):
    return get_family("vae").task({**BASE, **overrides})


@functools.lru_cache(maxsize=None)
def _jitted(spec):
    """Compiled loss and loss gradient of one spec (hparams traced, so shared)."""
    return jax.jit(spec.loss), jax.jit(jax.grad(spec.loss, argnums=1))


def _random_params(task, seed=0):
    """Parameters of the right shapes drawn by NumPy (no compiled init needed)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(task.init, jax.random.key(0))
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(0.2 * rng.normal(size=s.shape), jnp.float32), shapes)


def _loss(task, params, batch, seed):
    return float(_jitted(task.spec)[0](task.hparams, params, batch, jax.random.key(seed)))


def _inverse_softplus(y):
    return float(np.log(np.expm1(y)))


def test_pixels_in_unit_interval_on_the_classification_split():
    standardised = data.classification("digits")
    raw = digits_unit_interval()
    train = raw["train"]["x"]
    mean, std = train.mean(), train.std() + 1e-6  # digits are standardised as a whole
    for split in SPLITS:
        x = raw[split]["x"]
        assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() == 1.0
        np.testing.assert_array_equal(raw[split]["y"], standardised[split]["y"])
        np.testing.assert_allclose((x - mean) / std, standardised[split]["x"], atol=1e-4)
        assert set(_task().data[split]) == {"x"}


def test_shapes():
    task = _task(latent=2, hidden=[128, 64])
    params = jax.eval_shape(task.init, jax.random.key(0))
    assert [l["w"].shape for l in params["encoder"]] == [(64, 128), (128, 64), (64, 4)]
    assert [l["w"].shape for l in params["decoder"]] == [(2, 64), (64, 128), (128, 64)]
    x = task.eval_batch("test", 5)["x"]
    mean, std = jax.eval_shape(task.spec.posterior, params, x)
    assert mean.shape == std.shape == (5, 2)
    assert jax.eval_shape(task.spec.decode, params, mean).shape == (5, 64)


@pytest.mark.parametrize("post_mean,post_std,logit", [(0.0, 1.0, 0.0), (1.5, 1.0, 0.0),
                                                      (-0.7, 0.3, 1.2)])
def test_loss_is_the_negative_elbo(post_mean, post_std, logit):
    """With constant heads the ELBO is known in closed form: a fixed Bernoulli decoder gives the
    same cross-entropy for every z, and the KL of N(m, s^2) to N(0, 1) is analytic."""
    task = _task()
    latent = task.spec.latent
    params = _random_params(task)
    head = params["encoder"][-1]
    head["w"] = jnp.zeros_like(head["w"])
    head["b"] = jnp.concatenate([jnp.full((latent,), post_mean),
                                 jnp.full((latent,), _inverse_softplus(post_std - MIN_STD))])
    params["decoder"][-1]["w"] = jnp.zeros_like(params["decoder"][-1]["w"])
    params["decoder"][-1]["b"] = jnp.full((64,), logit)
    x = np.asarray(task.eval_batch("train", 64)["x"], np.float64)
    p = 1.0 / (1.0 + np.exp(-logit))
    nll = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum(1).mean()
    kl = latent * 0.5 * (post_mean ** 2 + post_std ** 2 - 1.0 - 2.0 * np.log(post_std))
    loss = _loss(task, params, {"x": jnp.asarray(x, jnp.float32)}, 0)
    np.testing.assert_allclose(loss, nll + kl, rtol=1e-5)
    if (post_mean, post_std, logit) == (0.0, 1.0, 0.0):
        np.testing.assert_allclose(loss, 64 * np.log(2), rtol=1e-6)


def test_gaussian_kl_matches_a_monte_carlo_estimate():
    rng = np.random.default_rng(0)
    mean, std = np.array([0.5, -1.0, 0.0]), np.array([0.4, 1.3, 2.0])
    z = mean + std * rng.standard_normal((400_000, 3))
    log_q = -0.5 * ((z - mean) / std) ** 2 - np.log(std)
    log_p = -0.5 * z ** 2
    np.testing.assert_allclose(gaussian_kl(jnp.asarray(mean), jnp.asarray(std)),
                               (log_q - log_p).sum(1).mean(), rtol=1e-2)


def test_reparameterisation_noise_comes_from_the_key():
    task = _task()
    params = _random_params(task)
    batch = task.eval_batch("train", 64)
    assert _loss(task, params, batch, 0) == _loss(task, params, batch, 0)
    assert _loss(task, params, batch, 0) != _loss(task, params, batch, 1)
    grads = _jitted(task.spec)[1](task.hparams, params, batch, jax.random.key(0))
    assert float(jnp.abs(grads["encoder"][0]["w"]).max()) > 0  # gradient flows through sampling

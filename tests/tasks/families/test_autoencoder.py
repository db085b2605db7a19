"""MLP autoencoders: shapes, the reconstruction loss, input noise, unlabelled data."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.tasks import SPLITS, data, get_family

BASE = {"dataset": "digits", "hidden": [64], "bottleneck": 8, "activation": "tanh",
        "batch_size": 32, "train_fraction": 1.0, "noise_std": 0.0, "init_kind": 0,
        "init_scale": 1.0}


def _task(**overrides):
    return get_family("autoencoder").task({**BASE, **overrides})


@functools.lru_cache(maxsize=None)
def _jitted(spec):
    """Compiled init, loss and reconstruction of one spec (hparams traced, so shared)."""
    recon = lambda params, x: spec.decode(params, spec.encode(params, x))
    return jax.jit(spec.init), jax.jit(spec.loss), jax.jit(recon)


def _init(task, seed):
    return _jitted(task.spec)[0](task.hparams, jax.random.key(seed))


def _loss(task, params, x, seed):
    return float(_jitted(task.spec)[1](task.hparams, params, {"x": x}, jax.random.key(seed)))


@pytest.mark.parametrize("dataset,dim", [("digits", 64), ("mnist1d", 40)])
def test_encoder_decoder_shapes_mirror_each_other(dataset, dim):
    task = _task(dataset=dataset, hidden=[128, 64])
    params = jax.eval_shape(task.init, jax.random.key(0))
    assert [layer["w"].shape for layer in params["encoder"]] == [(dim, 128), (128, 64), (64, 8)]
    assert [layer["w"].shape for layer in params["decoder"]] == [(8, 64), (64, 128), (128, dim)]
    x = task.eval_batch("valid", 7)["x"]
    code = jax.eval_shape(task.spec.encode, params, x)
    assert code.shape == (7, 8)
    assert jax.eval_shape(task.spec.decode, params, code).shape == (7, dim)


def test_data_is_the_standardised_inputs_without_labels():
    task = _task(dataset="mnist1d")
    for split in SPLITS:
        assert set(task.data[split]) == {"x"}
        np.testing.assert_array_equal(task.data[split]["x"],
                                      data.classification("mnist1d")[split]["x"])


def test_loss_is_mean_squared_reconstruction_error():
    task = _task()
    params = _init(task, 1)
    x = task.eval_batch("train", 64)["x"]
    # The decoder's output layer starts at zero, so the first reconstruction is all zeros.
    np.testing.assert_allclose(_loss(task, params, x, 0), jnp.mean(x ** 2), rtol=1e-6)
    params = jax.tree_util.tree_map(lambda p: p + 0.05, params)
    recon = _jitted(task.spec)[2](params, x)
    assert float(jnp.abs(recon).mean()) > 0.1
    expected = np.mean((np.asarray(recon, np.float64) - np.asarray(x, np.float64)) ** 2)
    np.testing.assert_allclose(_loss(task, params, x, 0), expected, rtol=1e-5)


def test_input_noise_corrupts_the_encoder_input_only():
    clean, noisy = _task(noise_std=0.0), _task(noise_std=0.3)
    assert clean.bucket == noisy.bucket  # the noise level is a traced hparam
    params = jax.tree_util.tree_map(lambda p: p + 0.05, _init(clean, 1))
    x = clean.eval_batch("train", 64)["x"]
    assert _loss(clean, params, x, 0) == _loss(clean, params, x, 1)
    assert _loss(noisy, params, x, 0) != _loss(noisy, params, x, 1)
    corrupted = x + 0.3 * jax.random.normal(jax.random.key(0), x.shape)
    recon = _jitted(noisy.spec)[2](params, corrupted)
    np.testing.assert_allclose(_loss(noisy, params, x, 0), jnp.mean((recon - x) ** 2), rtol=1e-5)

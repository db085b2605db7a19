"""Conv classifiers: layers against NumPy and lax references, input resolutions, shapes, buckets."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.tasks import data, get_family
from lopt.tasks.families.conv import ConvClassifierSpec, _avg_pool2, conv_same

BASE_2D = {"image_size": 8, "channels": [8, 16], "downsample": "none", "activation": "relu",
           "batch_size": 32, "train_fraction": 1.0, "init_kind": 0, "init_scale": 1.0}
BASE_1D = {"channels": [8], "kernel": 5, "downsample": "none", "activation": "relu",
           "batch_size": 32, "train_fraction": 1.0, "init_kind": 1, "init_scale": 1.0}


def _conv2d(**overrides):
    return get_family("conv2d").task({**BASE_2D, **overrides})


def _conv1d(**overrides):
    return get_family("conv1d").task({**BASE_1D, **overrides})


@functools.lru_cache(maxsize=None)
def _jitted(spec):
    """One compiled init and apply per spec (eager random ops compile once per shape: slow)."""
    return jax.jit(spec.init), jax.jit(spec.apply)


def _init(task, seed=0):
    return _jitted(task.spec)[0](task.hparams, jax.random.key(seed))


def _random_params(task, seed=0):
    """Parameters of the right shapes drawn by NumPy (no compiled init needed)."""
    rng = np.random.default_rng(seed)

    def draw(shape):
        fan_in = np.prod(shape.shape[:-1]) if len(shape.shape) > 1 else 1
        return jnp.asarray(rng.normal(size=shape.shape) / np.sqrt(fan_in), jnp.float32)

    return jax.tree_util.tree_map(draw, jax.eval_shape(task.init, jax.random.key(0)))


def _numpy_one_layer(params, x):
    """Reference for a one-layer relu net: SAME cross-correlation, global mean pool, dense head."""
    w, b = np.asarray(params["convs"][0]["w"]), np.asarray(params["convs"][0]["b"])
    k, spatial = w.shape[0], x.shape[1:-1]
    pad = [(0, 0)] + [(k // 2, k // 2)] * len(spatial) + [(0, 0)]
    xp = np.pad(x, pad)
    out = np.zeros(x.shape[:-1] + (w.shape[-1],))
    for offset in np.ndindex(*(k,) * len(spatial)):
        window = tuple(slice(o, o + n) for o, n in zip(offset, spatial))
        out += np.einsum("b...i,io->b...o", xp[(slice(None), *window)], w[offset])
    pooled = np.maximum(out + b, 0).mean(axis=tuple(range(1, 1 + len(spatial))))
    return pooled @ np.asarray(params["head"]["w"]) + np.asarray(params["head"]["b"])


@pytest.mark.parametrize("make", [lambda: _conv2d(channels=[8]), lambda: _conv1d()])
def test_one_layer_net_matches_numpy_reference(make):
    task = make()
    params = _random_params(task)
    x = np.asarray(task.eval_batch("valid", 16)["x"], np.float64)
    x = x.reshape((16, *task.spec.input_shape))
    expected = _numpy_one_layer(params, x)
    np.testing.assert_allclose(_jitted(task.spec)[1](params, jnp.asarray(x, jnp.float32)), expected,
                               rtol=1e-4, atol=1e-4)


def test_16x16_tasks_see_every_pixel_of_16x16_images():
    task = _conv2d(image_size=16, channels=[8])
    x = task.eval_batch("train", 4)["x"]
    assert x.shape == (4, 16, 16, 1) and task.spec.stem_stride == 2
    np.testing.assert_array_equal(x[:, ::2, ::2], data.images("digits", 8)["train"]["x"][:4])
    params = _random_params(task)
    saliency = jax.jit(jax.grad(lambda x: task.spec.apply(params, x).sum()))(x)
    assert np.all(np.abs(np.asarray(saliency)).sum(0) > 0)  # the stride-2 stem skips no pixel
    with pytest.raises(TypeError):
        jax.eval_shape(task.spec.apply, params, jnp.zeros((4, 8, 8, 1)))


@pytest.mark.parametrize("size,downsample,feature_size", [
    (8, "none", 8), (8, "stride", 2), (8, "avg_pool", 2),
    (16, "none", 8), (16, "stride", 4), (16, "avg_pool", 2),  # the stem halves 16x16 first
])
def test_parameter_feature_and_logit_shapes(size, downsample, feature_size):
    task = _conv2d(image_size=size, downsample=downsample)
    params = jax.eval_shape(task.init, jax.random.key(0))
    shapes = jax.tree_util.tree_map(lambda a: a.shape, params)
    assert shapes["convs"] == [{"w": (3, 3, 1, 8), "b": (8,)}, {"w": (3, 3, 8, 16), "b": (16,)}]
    assert shapes["head"] == {"w": (16, 10), "b": (10,)}
    x = task.eval_batch("test", 5)["x"]
    assert x.shape == (5, size, size, 1)
    features = jax.eval_shape(task.spec.features, params, x)
    assert features.shape == (5, feature_size, feature_size, 16)
    assert jax.eval_shape(task.spec.apply, params, x).shape == (5, 10)


def test_conv1d_adds_a_channel_axis_to_mnist1d_signals():
    task = _conv1d(channels=[16, 32], kernel=3, downsample="stride")
    batch = task.batch("train", jax.random.key(0))
    assert batch["x"].shape == (32, 40) and task.spec.input_shape == (40, 1)
    params = jax.eval_shape(task.init, jax.random.key(0))
    assert params["convs"][0]["w"].shape == (3, 1, 16)
    assert params["convs"][1]["w"].shape == (3, 16, 32)
    assert jax.eval_shape(task.spec.features, params, batch["x"]).shape == (32, 10, 32)
    assert jax.eval_shape(task.spec.apply, params, batch["x"]).shape == (32, 10)


@pytest.mark.parametrize("shape,kernel,stride", [((2, 8, 8, 3), 3, 1), ((2, 16, 16, 2), 3, 2),
                                                 ((2, 8, 8, 3), 3, 2), ((3, 40, 2), 5, 1),
                                                 ((3, 40, 2), 5, 2), ((3, 40, 2), 3, 2)])
def test_patch_convolution_matches_lax_same_convolution(shape, kernel, stride):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel,) * (len(shape) - 2) + (shape[-1], 4)), jnp.float32)
    layout = {3: ("NWC", "WIO", "NWC"), 4: ("NHWC", "HWIO", "NHWC")}[len(shape)]
    expected = jax.lax.conv_general_dilated(x, w, (stride,) * (len(shape) - 2), "SAME",
                                            dimension_numbers=layout)
    np.testing.assert_allclose(conv_same(x, w, stride), expected, rtol=1e-5, atol=1e-5)


def test_avg_pool_averages_disjoint_windows():
    x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
    expected = np.asarray(x).reshape(2, 2, 2, 3, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(_avg_pool2(x), expected)
    signal = jnp.arange(10.0).reshape(1, 10, 1)
    np.testing.assert_allclose(_avg_pool2(signal)[0, :, 0], np.arange(10.0).reshape(5, 2).mean(1))


def test_initialiser_is_traced_and_shares_the_bucket():
    a = _conv2d(init_scale=1.0, init_kind=0, train_fraction=1.0)
    b = _conv2d(init_scale=2.0, init_kind=0, train_fraction=0.25)
    c = _conv2d(init_kind=2)
    assert a.bucket == b.bucket == c.bucket
    pa, pb = _init(a, 3), _init(b, 3)
    for wa, wb in zip(jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb)):
        np.testing.assert_allclose(2.0 * wa, wb, rtol=1e-6)
    glorot = _init(c, 3)["convs"][1]["w"]
    assert float(jnp.abs(glorot).max()) <= np.sqrt(6.0 / (9 * 8 + 16)) + 1e-6
    assert int(b.hparams["n_train"]) == len(b.data["train"]["y"]) // 4


@pytest.mark.parametrize("name", ["conv2d", "conv1d"])
def test_sampled_configs_are_plain_json_within_the_documented_menus(name):
    fam = get_family(name)
    for i in range(30):
        config = fam.sample_config(np.random.default_rng(i))
        assert json.loads(json.dumps(config)) == config
        spec = fam.build(config).spec
        assert isinstance(spec, ConvClassifierSpec) and hash(spec) is not None
        assert spec.channels in fam.space["channels"]
        assert spec.downsample in fam.space["downsample"]
        assert spec.batch_size in fam.space["batch_size"]

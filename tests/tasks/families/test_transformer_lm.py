"""Transformer language models: causal attention against a direct reference, causality of the
whole model, pre-LayerNorm pieces, and the windows shared with rnn_lm."""

import jax
import jax.numpy as jnp
import numpy as np

from lopt.tasks import data, get_family
from lopt.tasks.families import rnn_lm
from lopt.tasks.families.transformer_lm import (
    ARCHS, MLP_RATIO, TransformerLMSpec, causal_attention, layer_norm)

BASE = {"layers": 2, "width": 32, "heads": 4, "seq_len": 16, "batch_size": 8,
        "train_fraction": 1.0, "init_kind": 1, "init_scale": 1.0}


def _task(**overrides):
    return get_family("transformer_lm").task({**BASE, **overrides})


def _random_params(task, scale=0.3, seed=0):
    """Parameters of the right shapes drawn by NumPy (no compiled init needed)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(task.init, jax.random.key(0))
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(scale * rng.normal(size=s.shape), jnp.float32), shapes)


def _reference_attention(p, x, heads):
    """Attention written position by position: softmax over the prefix ``0..i`` only."""
    x = np.asarray(x, np.float64)
    batch, length, width = x.shape
    d = width // heads
    qkv = x @ np.asarray(p["qkv"]["w"]) + np.asarray(p["qkv"]["b"])
    q, k, v = (qkv[..., i * width:(i + 1) * width] for i in range(3))
    out = np.zeros_like(x)
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        for i in range(length):
            scores = np.einsum("bd,bjd->bj", q[:, i, cols], k[:, :i + 1, cols]) / np.sqrt(d)
            weights = np.exp(scores - scores.max(1, keepdims=True))
            weights /= weights.sum(1, keepdims=True)
            out[:, i, cols] = np.einsum("bj,bjd->bd", weights, v[:, :i + 1, cols])
    return out @ np.asarray(p["out"]["w"]) + np.asarray(p["out"]["b"])


def test_attention_matches_a_position_by_position_reference():
    params = _random_params(_task(), scale=0.5)["blocks"][0]["attn"]
    x = jax.random.normal(jax.random.key(0), (3, 16, 32))
    np.testing.assert_allclose(causal_attention(params, x, 4), _reference_attention(params, x, 4),
                               rtol=1e-4, atol=1e-5)


def test_the_model_is_causal():
    """Changing token ``j`` changes the logits at positions ``>= j`` and never before."""
    task = _task()
    params = _random_params(task)
    x = task.eval_batch("valid", 2)["inputs"]
    changed = [x.at[:, j].set((x[:, j] + 11) % data.VOCAB) for j in (0, 5, 15)]
    logits = np.asarray(jax.jit(task.spec.logits)(params, jnp.concatenate([x, *changed])))
    base, variants = logits[:2], logits[2:].reshape(3, 2, 16, data.VOCAB)
    for j, out in zip((0, 5, 15), variants):
        np.testing.assert_allclose(out[:, :j], base[:, :j], rtol=1e-6, atol=1e-6)
        assert np.abs(out[:, j:] - base[:, j:]).max(-1).min() > 1e-4


def test_layer_norm_standardises_each_position():
    x = 3.0 + 5.0 * jax.random.normal(jax.random.key(1), (4, 7, 32))
    y = np.asarray(layer_norm({"scale": jnp.ones(32), "bias": jnp.zeros(32)}, x))
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(-1), 1.0, atol=1e-3)


def test_sampled_shapes():
    fam = get_family("transformer_lm")
    for seed in range(20):
        config = fam.sample_config(np.random.default_rng(seed))
        assert (config["layers"], config["width"], config["seq_len"]) in ARCHS
        assert config["width"] % config["heads"] == 0
    task = _task(layers=1, width=64, heads=2)
    shapes = jax.eval_shape(task.init, jax.random.key(0))
    assert shapes["pos"].shape == (16, 64) and shapes["tok"].shape == (data.VOCAB, 64)
    assert len(shapes["blocks"]) == 1
    assert shapes["blocks"][0]["mlp_in"]["w"].shape == (64, MLP_RATIO * 64)
    assert shapes["head"]["w"].shape == (64, data.VOCAB)


def test_windows_are_shared_with_rnn_lm():
    assert TransformerLMSpec.sample_batch is rnn_lm.TextWindows.sample_batch
    assert TransformerLMSpec.eval_batch is rnn_lm.TextWindows.eval_batch
    batch = _task(train_fraction=0.5).batch("train", jax.random.key(0))
    x, y = np.asarray(batch["inputs"]), np.asarray(batch["targets"])
    assert x.shape == (8, 16)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])

"""RNN language models: windows of the token stream, causal recurrent cells, the loss."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.tasks import SPLITS, data, get_family
from lopt.tasks.families.rnn_lm import CELLS, eval_windows, sample_windows

BASE = {"cell": "lstm", "embed_dim": 32, "hidden": 32, "seq_len": 16, "batch_size": 8,
        "train_fraction": 1.0, "init_kind": 1, "init_scale": 1.0}
STREAM = jnp.arange(1000, dtype=jnp.int32)  # token value = position: windows are easy to read


def _task(**overrides):
    return get_family("rnn_lm").task({**BASE, **overrides})


def _random_params(task, scale=0.2, seed=0):
    """Parameters of the right shapes drawn by NumPy (no compiled init needed)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(task.init, jax.random.key(0))
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(scale * rng.normal(size=s.shape), jnp.float32), shapes)


@functools.lru_cache(maxsize=None)
def _model(cell):
    """A task of ``cell``, random parameters and its jitted logits and loss."""
    task = _task(cell=cell)
    outputs = jax.jit(lambda p, b: (task.spec.logits(p, b["inputs"]),
                                    task.loss(p, b, jax.random.key(0))))
    return task, _random_params(task), outputs


def _check_windows(batch, seq_len, stream_end):
    x, y = np.asarray(batch["inputs"]), np.asarray(batch["targets"])
    assert x.shape == y.shape and x.shape[1] == seq_len
    np.testing.assert_array_equal(np.diff(x, axis=1), 1)  # contiguous slices
    np.testing.assert_array_equal(y, x + 1)  # targets: the next token
    assert x.min() >= 0 and y.max() < stream_end


def test_sampled_windows_are_contiguous_and_respect_a_traced_limit():
    sample = jax.jit(lambda key, limit: sample_windows(STREAM, 16, 256, key, limit))
    for limit in (17, 100, 5000):
        batch = sample(jax.random.key(limit), jnp.int32(limit))
        _check_windows(batch, 16, min(limit, 1000))
    starts = np.asarray(sample(jax.random.key(0), jnp.int32(40))["inputs"][:, 0])
    assert set(starts) == set(range(40 - 16))  # every allowed offset, and no other, is drawn
    full = np.asarray(sample_windows(STREAM, 16, 512, jax.random.key(1))["inputs"][:, 0])
    assert full.max() > 900  # without a limit the whole stream is used


def test_eval_windows_are_fixed_and_evenly_spaced():
    batch = eval_windows(STREAM, 16, 9)
    _check_windows(batch, 16, 1000)
    starts = np.asarray(batch["inputs"][:, 0])
    assert starts[0] == 0 and batch["targets"][-1, -1] == 999  # first to last token
    assert np.ptp(np.diff(starts)) <= 1  # even spacing, up to rounding
    limited = eval_windows(STREAM, 16, 9, jnp.int32(200))
    _check_windows(limited, 16, 200)
    assert limited["targets"][-1, -1] == 199


def test_task_batches_come_from_the_text_splits():
    task = _task(train_fraction=0.25)
    corpus = data.text()
    n_train = int(0.25 * len(corpus["train"]["tokens"]))
    assert float(task.hparams["n_train"]) == n_train
    for split in SPLITS:
        batch = task.eval_batch(split, 4)
        tokens = corpus[split]["tokens"]
        start = int(np.flatnonzero(
            np.all(np.lib.stride_tricks.sliding_window_view(tokens, 16) == batch["inputs"][1],
                   axis=1))[0])
        np.testing.assert_array_equal(batch["targets"][1], tokens[start + 1:start + 17])
    train = task.batch("train", jax.random.key(0))
    assert train["inputs"].shape == (8, 16) and int(train["inputs"].max()) < data.VOCAB


@pytest.mark.parametrize("cell", CELLS)
def test_cells_are_causal_and_carry_information_forward(cell):
    task, params, outputs = _model(cell)
    x = task.eval_batch("valid", 4)["inputs"]
    changed = x.at[:, 10].set((x[:, 10] + 7) % data.VOCAB)
    both = np.asarray(outputs(params, {"inputs": jnp.concatenate([x, changed]),
                                       "targets": jnp.concatenate([x, x])})[0])
    a, b = both[:4], both[4:]
    assert a.shape == (4, 16, data.VOCAB)
    np.testing.assert_array_equal(a[:, :10], b[:, :10])  # the past does not see the future
    assert np.abs(a[:, 10:] - b[:, 10:]).max(axis=-1).min() > 0  # every later step does


@pytest.mark.parametrize("cell", CELLS)
def test_loss_is_mean_next_character_cross_entropy(cell):
    task, params, outputs = _model(cell)
    batch = task.eval_batch("test", 4)
    logits, loss = outputs(params, batch)
    logits = np.asarray(logits, np.float64)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_p, np.asarray(batch["targets"])[..., None], -1)
    np.testing.assert_allclose(float(loss), -picked.mean(), rtol=1e-5)


def test_gru_learns_beyond_unigram_statistics():
    """A recurrent model must beat the best context-free predictor (unigram entropy, ~3.0)."""
    task = _task(cell="gru", batch_size=16)
    counts = np.bincount(data.text()["train"]["tokens"], minlength=data.VOCAB) + 1e-9
    p = counts / counts.sum()
    unigram = float(-(p * np.log(p)).sum())
    opt = optax.adam(1e-2)

    @jax.jit
    def step(params, state, key):
        loss, grads = jax.value_and_grad(task.loss)(params, task.batch("train", key), key)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    params = _random_params(task, scale=0.1)
    state = opt.init(params)
    for i in range(200):
        params, state, _ = step(params, state, jax.random.key(i))
    valid = jax.jit(task.loss)(params, task.eval_batch("valid", 256), jax.random.key(0))
    assert float(valid) < unigram - 0.3

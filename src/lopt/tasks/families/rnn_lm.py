"""Character-level recurrent language models (vanilla RNN, GRU, LSTM) on standard-library text.

Also home of the window sampling shared by every family trained on the text stream: a split is
one long 1-D array of character ids, and an example is a window of ``seq_len + 1`` consecutive
characters (inputs and the same characters shifted by one as targets).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lopt.tasks import data
from lopt.tasks.base import TaskFamily, TaskParts, TaskSpec, choice
from lopt.tasks.families.common import INITIALIZERS, cross_entropy, init_hparams, init_kernel

CELLS = ("rnn", "gru", "lstm")
EMBED = (32, 64)
HIDDEN = (32, 64)
SEQ_LEN = (16, 32)
BATCH = (8, 16)  # with hidden 64 and length 32, batch 16 is at the ~5 ms CPU step budget
TRAIN_FRACTION = (0.25, 0.5, 1.0)

#: Gate blocks per cell: the input and recurrent kernels have ``GATES[cell] * hidden`` columns.
GATES = {"rnn": 1, "gru": 3, "lstm": 4}


# ---------------------------------------------------------------------------------------------
# Windows of a token stream (shared with transformer_lm).


def _windows(tokens, starts, seq_len):
    """``{"inputs", "targets"}``: ``[n, seq_len]`` slices at ``starts``, targets shifted by one."""
    w = tokens[starts[:, None] + jnp.arange(seq_len + 1)]
    return {"inputs": w[:, :-1], "targets": w[:, 1:]}


def _stream_length(tokens, seq_len, limit):
    """Tokens in use: the whole split, or its first ``limit`` (traced) tokens."""
    n = tokens.shape[0]
    return n if limit is None else jnp.clip(limit, seq_len + 1, n)


def sample_windows(tokens, seq_len: int, batch_size: int, key, limit=None):
    """``batch_size`` windows at uniformly random offsets.

    ``limit`` (possibly traced) caps the length of the stream used: every window lies within the
    first ``limit`` tokens, so the highest start offset is ``limit - seq_len - 1``.
    """
    used = _stream_length(tokens, seq_len, limit)
    starts = jax.random.randint(key, (batch_size,), 0, used - seq_len)
    return _windows(tokens, starts, seq_len)


def eval_windows(tokens, seq_len: int, size: int, limit=None):
    """``size`` fixed windows, evenly spaced from the start to the end of the stream in use."""
    last = _stream_length(tokens, seq_len, limit) - seq_len - 1
    starts = jnp.round(jnp.linspace(0.0, 1.0, size) * last).astype(jnp.int32)
    return _windows(tokens, starts, seq_len)


class TextWindows:
    """Mixin for specs with ``seq_len`` and ``batch_size`` whose data is ``{"tokens": stream}``."""

    def sample_batch(self, hp, data, key, *, limit=None):
        return sample_windows(data["tokens"], self.seq_len, self.batch_size, key, limit)

    def eval_batch(self, hp, data, size, *, limit=None):
        return eval_windows(data["tokens"], self.seq_len, size, limit)


def text_hparams(config, n_tokens: int) -> dict:
    """Traced hyperparameters common to the text families: initialiser and training-stream size."""
    return {"init_kind": config["init_kind"], "init_scale": config["init_scale"],
            "n_train": int(config["train_fraction"] * n_tokens)}


def embed_init(key, vocab, dim, hp):
    """Token embeddings ``N(0, init_scale**2)``: unit-scale inputs for the next layer."""
    return jax.random.normal(key, (vocab, dim), jnp.float32) * hp["init_scale"]


# ---------------------------------------------------------------------------------------------
# Recurrent cells. ``xw`` is the input's projection ``x @ wx + b`` (computed for all steps at
# once, outside the scan); the cell adds the recurrent term.


def _rnn_step(wh, h, xw):
    """Vanilla (Elman) cell: ``h' = tanh(x W_x + h W_h + b)``."""
    h = jnp.tanh(xw + h @ wh)
    return h, h


def _gru_step(wh, h, xw):
    """GRU (update gate ``z``, reset gate applied to the recurrent candidate term)."""
    xz, xr, xn = jnp.split(xw, 3, axis=-1)
    hz, hr, hn = jnp.split(h @ wh, 3, axis=-1)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + jax.nn.sigmoid(xr + hr) * hn)
    h = n + z * (h - n)
    return h, h


def _lstm_step(wh, carry, xw):
    """LSTM with input, forget, cell and output blocks; the forget gate is biased open."""
    h, c = carry
    i, f, g, o = jnp.split(xw + h @ wh, 4, axis=-1)
    c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)  # forget bias 1
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h


_STEPS = {"rnn": _rnn_step, "gru": _gru_step, "lstm": _lstm_step}


@dataclasses.dataclass(frozen=True)
class RNNLMSpec(TextWindows, TaskSpec):
    cell: str
    embed_dim: int
    hidden: int
    seq_len: int
    batch_size: int
    vocab: int = data.VOCAB

    def init(self, hp, key):
        k_emb, k_x, k_h, k_out = jax.random.split(key, 4)
        width = GATES[self.cell] * self.hidden

        def kernel(k, shape):
            return init_kernel(k, shape, hp["init_kind"], hp["init_scale"])

        return {
            "embed": embed_init(k_emb, self.vocab, self.embed_dim, hp),
            "cell": {"wx": kernel(k_x, (self.embed_dim, width)),
                     "wh": kernel(k_h, (self.hidden, width)),
                     "b": jnp.zeros((width,))},
            "out": {"w": kernel(k_out, (self.hidden, self.vocab)), "b": jnp.zeros((self.vocab,))},
        }

    def hidden_states(self, params, inputs):
        """``[batch, seq_len, hidden]`` outputs of the cell run over ``inputs`` token ids."""
        cell = params["cell"]
        # Embedding then input kernel is one [vocab, width] table: a gather replaces the matmul.
        xw = (params["embed"] @ cell["wx"])[inputs.T] + cell["b"]  # [seq, batch, width]
        h0 = jnp.zeros((inputs.shape[0], self.hidden))
        carry = (h0, h0) if self.cell == "lstm" else h0
        step = _STEPS[self.cell]
        # Not unrolled: on the CPU, unrolling these small steps makes them slower.
        _, hs = jax.lax.scan(lambda c, x: step(cell["wh"], c, x), carry, xw)
        return hs.swapaxes(0, 1)

    def logits(self, params, inputs):
        """``[batch, seq_len, vocab]``: at each position, logits of the next character."""
        return self.hidden_states(params, inputs) @ params["out"]["w"] + params["out"]["b"]

    def loss(self, hp, params, batch, key):
        return cross_entropy(self.logits(params, batch["inputs"]), batch["targets"])


class RNNLanguageModel(TaskFamily):
    name = "rnn_lm"
    description = "Character-level RNN/GRU/LSTM language models on standard-library source text."
    space = {
        "cell": CELLS,
        "embed_dim": EMBED,
        "hidden": HIDDEN,
        "seq_len": SEQ_LEN,
        "batch_size": BATCH,
        "train_fraction": TRAIN_FRACTION,
        "initializer": INITIALIZERS,
        "init_scale": "log-uniform [0.5, 2] x initialiser gain (embeddings: N(0, scale^2))",
    }

    def sample_config(self, rng):
        return {
            "cell": choice(rng, CELLS),
            "embed_dim": choice(rng, EMBED),
            "hidden": choice(rng, HIDDEN),
            "seq_len": choice(rng, SEQ_LEN),
            "batch_size": choice(rng, BATCH),
            "train_fraction": choice(rng, TRAIN_FRACTION),
            **init_hparams(rng),
        }

    def build(self, config):
        ds = data.text()
        spec = RNNLMSpec(cell=config["cell"], embed_dim=config["embed_dim"],
                         hidden=config["hidden"], seq_len=config["seq_len"],
                         batch_size=config["batch_size"])
        return TaskParts(spec, text_hparams(config, len(ds["train"]["tokens"])), ds)

"""Small causal decoder-only transformers: character-level language models on stdlib text.

Pre-LayerNorm blocks (causal multi-head self-attention, then a GELU MLP), learned token and
positional embeddings and a final LayerNorm; trained on the same windows as ``rnn_lm``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lopt.tasks import data
from lopt.tasks.base import TaskFamily, TaskParts, TaskSpec, choice
from lopt.tasks.families.common import INITIALIZERS, cross_entropy, init_hparams, init_kernel
from lopt.tasks.families.rnn_lm import TRAIN_FRACTION, TextWindows, embed_init, text_hparams

#: (layers, width, seq_len): the combinations whose training step fits the ~5 ms CPU budget; two
#: layers at width 64 or at length 32, and width 64 at length 32, measured 8-17 ms a step.
ARCHS = ((1, 32, 16), (1, 32, 32), (2, 32, 16), (1, 64, 16))
HEADS = (2, 4)
BATCH = (8, 16)
#: MLP hidden width / model width: 2 rather than the usual 4 keeps a step within the CPU budget.
MLP_RATIO = 2


def _layer_norm_params(dim):
    return {"scale": jnp.ones((dim,)), "bias": jnp.zeros((dim,))}


def layer_norm(p, x, eps=1e-5):
    """Normalises each position over its features, then scales and shifts."""
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def _dense_params(key, d_in, d_out, hp):
    return {"w": init_kernel(key, (d_in, d_out), hp["init_kind"], hp["init_scale"]),
            "b": jnp.zeros((d_out,))}


def _dense(p, x):
    return x @ p["w"] + p["b"]


def causal_attention(p, x, heads):
    """Multi-head self-attention in which position ``i`` attends only to positions ``<= i``."""
    batch, length, width = x.shape
    qkv = _dense(p["qkv"], x).reshape(batch, length, 3, heads, width // heads)
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # each [batch, heads, length, head_dim]
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) * (width // heads) ** -0.5
    causal = jnp.tril(jnp.ones((length, length), bool))
    scores = jnp.where(causal, scores, -1e9)
    # Softmax written out: cheaper than jax.nn.softmax on the CPU at these sizes.
    e = jnp.exp(scores - jax.lax.stop_gradient(scores.max(-1, keepdims=True)))
    out = jnp.einsum("bhqk,bhkd->bhqd", e / e.sum(-1, keepdims=True), v)
    return _dense(p["out"], out.transpose(0, 2, 1, 3).reshape(batch, length, width))


def block(p, x, heads):
    """One pre-LayerNorm transformer block: residual attention, then residual MLP."""
    x = x + causal_attention(p["attn"], layer_norm(p["ln1"], x), heads)
    h = jax.nn.gelu(_dense(p["mlp_in"], layer_norm(p["ln2"], x)))
    return x + _dense(p["mlp_out"], h)


@dataclasses.dataclass(frozen=True)
class TransformerLMSpec(TextWindows, TaskSpec):
    layers: int
    width: int
    heads: int
    seq_len: int
    batch_size: int
    vocab: int = data.VOCAB

    def init(self, hp, key):
        k_tok, k_pos, k_head, *k_blocks = jax.random.split(key, 3 + self.layers)
        d, hidden = self.width, MLP_RATIO * self.width

        def block_params(k):
            k_qkv, k_out, k_in, k_mlp = jax.random.split(k, 4)
            return {"ln1": _layer_norm_params(d),
                    "attn": {"qkv": _dense_params(k_qkv, d, 3 * d, hp),
                             "out": _dense_params(k_out, d, d, hp)},
                    "ln2": _layer_norm_params(d),
                    "mlp_in": _dense_params(k_in, d, hidden, hp),
                    "mlp_out": _dense_params(k_mlp, hidden, d, hp)}

        return {"tok": embed_init(k_tok, self.vocab, d, hp),
                "pos": embed_init(k_pos, self.seq_len, d, hp),
                "blocks": [block_params(k) for k in k_blocks],
                "ln_f": _layer_norm_params(d),
                "head": _dense_params(k_head, d, self.vocab, hp)}

    def logits(self, params, inputs):
        """``[batch, seq_len, vocab]`` next-character logits for ``inputs`` token ids."""
        x = params["tok"][inputs] + params["pos"][: inputs.shape[1]]
        for p in params["blocks"]:
            x = block(p, x, self.heads)
        return _dense(params["head"], layer_norm(params["ln_f"], x))

    def loss(self, hp, params, batch, key):
        return cross_entropy(self.logits(params, batch["inputs"]), batch["targets"])


class TransformerLanguageModel(TaskFamily):
    name = "transformer_lm"
    description = "Small causal pre-LayerNorm transformers: character-level LMs on stdlib text."
    space = {
        "layers, width, seq_len": ARCHS,
        "heads": HEADS,
        "batch_size": BATCH,
        "train_fraction": TRAIN_FRACTION,
        "initializer": INITIALIZERS,
        "init_scale": "log-uniform [0.5, 2] x initialiser gain (embeddings: N(0, scale^2))",
    }

    def sample_config(self, rng):
        layers, width, seq_len = choice(rng, ARCHS)
        return {
            "layers": layers,
            "width": width,
            "heads": choice(rng, HEADS),
            "seq_len": seq_len,
            "batch_size": choice(rng, BATCH),
            "train_fraction": choice(rng, TRAIN_FRACTION),
            **init_hparams(rng),
        }

    def build(self, config):
        ds = data.text()
        spec = TransformerLMSpec(layers=config["layers"], width=config["width"],
                                 heads=config["heads"], seq_len=config["seq_len"],
                                 batch_size=config["batch_size"])
        return TaskParts(spec, text_hparams(config, len(ds["train"]["tokens"])), ds)

"""Pieces shared by task families: activations, initialisers, losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "swish": jax.nn.swish,
    "elu": jax.nn.elu,
}

#: Initialisers for weight matrices, chosen by a traced index so they share one compiled program.
INITIALIZERS = ("he_normal", "lecun_normal", "glorot_uniform")


def init_kernel(key, shape, kind, scale):
    """A weight tensor of ``shape`` (fan-in = product of all but the last axis).

    ``kind`` is a traced index into ``INITIALIZERS`` and ``scale`` a traced multiplier.
    """
    fan_in = 1
    for d in shape[:-1]:
        fan_in *= d
    fan_out = shape[-1]
    flat = (fan_in, fan_out)  # drawn 2-D and reshaped: N-D random draws compile slowly
    n = jax.random.normal(key, flat, jnp.float32).reshape(shape)
    u = jax.random.uniform(key, flat, jnp.float32, -1.0, 1.0).reshape(shape)
    he = n * jnp.sqrt(2.0 / fan_in)
    lecun = n * jnp.sqrt(1.0 / fan_in)
    glorot = u * jnp.sqrt(6.0 / (fan_in + fan_out))
    w = jnp.select([kind == 0, kind == 1], [he, lecun], glorot)
    return w * scale


def init_dense_stack(key, sizes, hp, *, zero_output: bool = False):
    """Weights and zero biases for a stack of dense layers ``sizes[0] -> ... -> sizes[-1]``;
    with ``zero_output`` the last layer's weights start at zero too.

    The zero is computed as ``w * 0``: XLA:CPU (jax 0.10) miscompiles a product with a constant
    zero matrix followed by a reduction (the loss came out inf when init and loss were one
    program, as in meta-training)."""
    keys = jax.random.split(key, len(sizes) - 1)
    layers = [
        {"w": init_kernel(k, (a, b), hp["init_kind"], hp["init_scale"]), "b": jnp.zeros((b,))}
        for k, a, b in zip(keys, sizes[:-1], sizes[1:])
    ]
    if zero_output:
        layers[-1]["w"] = layers[-1]["w"] * 0.0
    return layers


def apply_dense_stack(layers, x, activation, *, final_activation=False):
    act = ACTIVATIONS[activation]
    for i, layer in enumerate(layers):
        x = x @ layer["w"] + layer["b"]
        if i < len(layers) - 1 or final_activation:
            x = act(x)
    return x


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def init_hparams(rng, *, scale_range=(0.5, 2.0)):
    """Traced initialiser hyperparameters: kind (index into INITIALIZERS) and scale."""
    from lopt.tasks.base import log_uniform, round_sig

    return {
        "init_kind": int(rng.integers(len(INITIALIZERS))),
        "init_scale": round_sig(log_uniform(rng, *scale_range), 3),
    }

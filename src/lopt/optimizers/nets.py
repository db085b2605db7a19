"""The small networks inside learned optimizers, as plain pytrees of arrays (what ES perturbs)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def init_linear(key, n_in: int, n_out: int, *, scale: float = 1.0) -> dict:
    w = jax.random.normal(key, (n_in, n_out), jnp.float32) * (scale / jnp.sqrt(n_in))
    return {"w": w, "b": jnp.zeros((n_out,), jnp.float32)}


def init_mlp(key, sizes, *, final_scale: float = 1.0) -> list[dict]:
    """Dense layers ``sizes[0] -> ... -> sizes[-1]`` (He-scaled; the last one ``final_scale``)."""
    keys = jax.random.split(key, len(sizes) - 1)
    n = len(sizes) - 1
    return [init_linear(k, a, b, scale=(final_scale if i == n - 1 else jnp.sqrt(2.0)))
            for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:]))]


def per_element_mlp(layers, x, first_bias):
    """ReLU MLP over rows of ``x`` ``[n, c]``; ``first_bias`` ``[hidden]`` is added to the first
    layer (how per-tensor context reaches every element). Returns ``(outputs, last_hidden)``."""
    h = x @ layers[0]["w"] + (layers[0]["b"] + first_bias)
    h = jax.nn.relu(h)
    for layer in layers[1:-1]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    return h @ layers[-1]["w"] + layers[-1]["b"], h


def lstm_step(params, x, h, c):
    """One LSTM step, batched over rows: gates from ``[x, h] @ w + b`` (forget bias +1)."""
    z = jnp.concatenate([x, h], axis=-1) @ params["w"] + params["b"]
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, c


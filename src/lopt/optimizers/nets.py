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


def per_element_mlp(layers, x, first_bias, *, columns: bool = False):
    """ReLU MLP over the elements of ``x``: rows of ``[n, c]``, or with ``columns`` the columns
    of ``[c, n]``. ``first_bias`` (``[hidden]``, or one per element laid out like ``x``) is added
    to the first layer (how per-tensor context reaches every element). Returns ``(outputs,
    last_hidden)`` in the same layout.

    Columns make each layer a short, wide product ``w.T @ x``, which XLA:CPU runs at about
    twice the FLOP/s of the tall, skinny ``x @ w`` on one large tensor; rows are faster when
    the products are small and batched over particles (meta-training).
    """
    if columns:
        def dense(layer, h):
            return layer["w"].T @ h + layer["b"][:, None]

        first_bias = first_bias[:, None] if first_bias.ndim == 1 else first_bias
    else:
        def dense(layer, h):
            return h @ layer["w"] + layer["b"]

    h = jax.nn.relu(dense(layers[0], x) + first_bias)
    for layer in layers[1:-1]:
        h = jax.nn.relu(dense(layer, h))
    return dense(layers[-1], h), h


def lstm_step(params, x, h, c):
    """One LSTM step, batched over rows: gates from ``[x, h] @ w + b`` (forget bias +1)."""
    z = jnp.concatenate([x, h], axis=-1) @ params["w"] + params["b"]
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, c


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


def per_element_outputs(layers, skip, xs, biases, *, exp_mult: float, step_mult: float):
    """Runs the per-element network once over the elements of every tensor, concatenated.

    ``xs`` is a list of ``[n_i, c]`` feature matrices, ``biases`` ``[tensors, hidden]`` the
    per-tensor first-layer context. One tall matrix product per layer keeps the work in large
    GEMMs however small the tensors are. Returns the flat steps of each tensor and the per-tensor
    mean of the last hidden layer (the feedback summary).
    """
    sizes = [x.shape[0] for x in xs]
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + n)
    if len(xs) > 1:
        x = jnp.concatenate(xs, axis=0)
        rows = jnp.concatenate([jnp.broadcast_to(biases[i], (n, biases.shape[1]))
                                for i, n in enumerate(sizes)], axis=0)
    else:
        x, rows = xs[0], biases[0]
    out, hidden = per_element_mlp(layers, x, rows)
    d = out[:, 0] + x @ skip
    step = d * jnp.exp(exp_mult * out[:, 1]) * step_mult
    bounds = list(zip(offsets[:-1], offsets[1:]))
    means = jnp.stack([jnp.mean(hidden[a:b], axis=0) for a, b in bounds])
    return [step[a:b] for a, b in bounds], means

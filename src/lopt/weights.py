"""Learned-optimizer weights on disk: safetensors with a JSON model card in the header metadata.

The card records the architecture name and config, the lopt version and free-form provenance
(how the weights were meta-trained). Files are readable from JAX, NumPy and PyTorch.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import jax
import numpy as np

from lopt.atomic import atomic_write_bytes
from lopt.optimizers.base import LearnedOptimizer

FORMAT_VERSION = 1
CARD_KEY = "lopt"


class WeightsError(ValueError):
    """A weights file that cannot be used: unreadable, truncated, or not matching its card."""


def architectures() -> dict[str, type]:
    from lopt.optimizers.hierarchical import Hierarchical
    from lopt.optimizers.learned_adam import LearnedAdam
    from lopt.optimizers.mlp import PerParameterMLP

    return {c.name: c for c in (Hierarchical, PerParameterMLP, LearnedAdam)}


def _flatten(theta) -> dict[str, np.ndarray]:
    return {name: np.asarray(leaf)
            for name, leaf in zip(_names(theta), jax.tree_util.tree_leaves(theta))}


def save(path: str | os.PathLike, theta, optimizer: LearnedOptimizer, *,
         provenance: dict[str, Any] | None = None) -> None:
    """Writes ``theta`` of ``optimizer`` (architecture and config) to ``path`` atomically."""
    from safetensors.numpy import save as st_save

    from lopt import __version__

    if not isinstance(optimizer, LearnedOptimizer):
        raise TypeError(f"optimizer must be a lopt LearnedOptimizer, got {type(optimizer).__name__}")
    flat = _flatten(theta)
    _check_shapes(flat, _template(optimizer), where="theta")
    card = {"format": FORMAT_VERSION, "architecture": optimizer.name,
            "config": optimizer.config(), "lopt_version": __version__,
            "provenance": provenance or {}}
    data = st_save({k: np.array(v, np.float32, order="C") for k, v in flat.items()},
                   metadata={CARD_KEY: json.dumps(card)})
    atomic_write_bytes(path, data)


def load(path: str | os.PathLike, *, architecture: str | None = None
         ) -> tuple[Any, LearnedOptimizer, dict[str, Any]]:
    """Reads a weights file: returns ``(theta, optimizer, card)``.

    With ``architecture``, a file of another architecture is an error.
    """
    flat, optimizer, card = read(path, architecture=architecture)
    template = jax.eval_shape(lambda: optimizer.init(jax.random.key(0)))
    treedef = jax.tree_util.tree_structure(template)
    theta = jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(flat[n])
                                                   for n in _names(template)])
    return theta, optimizer, card


def read(path: str | os.PathLike, *, architecture: str | None = None
         ) -> tuple[dict[str, np.ndarray], LearnedOptimizer, dict[str, Any]]:
    """Like ``load`` but returns theta as NumPy arrays by dotted name (``"ffn.0.w"``), checked
    against the architecture without touching any JAX device (what the PyTorch adapter uses)."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            flat = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for truncated headers/data
        raise WeightsError(f"{path} is not a readable safetensors file ({e}); "
                           "it may be truncated or not a lopt weights file") from e
    if CARD_KEY not in metadata:
        raise WeightsError(f"{path} has no lopt model card in its metadata")
    card = json.loads(metadata[CARD_KEY])
    if architecture is not None and card.get("architecture") != architecture:
        raise WeightsError(f"{path} holds a {card.get('architecture')!r} optimizer, "
                           f"expected {architecture!r}")
    arch = architectures().get(card.get("architecture"))
    if arch is None:
        raise WeightsError(f"{path}: unknown architecture {card.get('architecture')!r}; "
                           f"known: {', '.join(architectures())}")
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in card["config"].items()}
    try:
        optimizer = arch(**config)
    except TypeError as e:
        raise WeightsError(f"{path}: config does not fit architecture {arch.name!r}: {e}") from e
    _check_shapes(flat, _template(optimizer), where=path)
    return flat, optimizer, card


@functools.lru_cache(maxsize=None)
def _template(optimizer: LearnedOptimizer) -> dict[str, jax.ShapeDtypeStruct]:
    """Names and shapes of the optimizer's meta-parameters (read only), by abstract evaluation:
    no device memory, no backend start-up, no compilation."""
    template = jax.eval_shape(lambda: optimizer.init(jax.random.key(0)))
    return dict(zip(_names(template), jax.tree_util.tree_leaves(template)))


def _names(tree) -> list[str]:
    """Dotted names of the leaves of ``tree``, in leaf order (as ``_flatten`` names them)."""
    return [".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _check_shapes(flat, template, *, where):
    missing = sorted(set(template) - set(flat))
    extra = sorted(set(flat) - set(template))
    wrong = sorted(k for k in set(flat) & set(template) if flat[k].shape != template[k].shape)
    if missing or extra or wrong:
        detail = "; ".join(filter(None, [
            f"missing {missing[:5]}" if missing else "",
            f"unexpected {extra[:5]}" if extra else "",
            ", ".join(f"{k}: {flat[k].shape} != expected {template[k].shape}"
                      for k in wrong[:5])]))
        raise WeightsError(f"{where}: weights do not match the architecture: {detail}")

"""Atomic, resumable checkpoints of arbitrary pytrees (PRNG keys included).

A checkpoint is one ``.npz`` file: the leaves in order, plus a JSON header with the tree's
structure and whatever metadata the caller adds. It is written to a temporary file and renamed,
so a process killed at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import jax
import numpy as np

from lopt.atomic import atomic_write_bytes


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def save_checkpoint(path: str | os.PathLike, tree: Any, meta: dict[str, Any]) -> None:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    arrays = {f"leaf{i:05d}": np.asarray(jax.random.key_data(x) if _is_key(x) else x)
              for i, x in enumerate(leaves)}
    header = {"meta": meta, "treedef": str(treedef), "num_leaves": len(leaves)}
    buf = io.BytesIO()
    np.savez(buf, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint, without restoring its arrays."""
    try:
        with np.load(path) as f:
            return json.loads(bytes(f["__header__"]).decode())["meta"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"checkpoint {path} is unreadable: {e}") from e


def load_checkpoint(path: str | os.PathLike, template: Any) -> tuple[Any, dict[str, Any]]:
    """Restores a checkpoint into the structure of ``template``; returns ``(tree, meta)``."""
    try:
        with np.load(path) as f:
            header = json.loads(bytes(f["__header__"]).decode())
            arrays = [f[f"leaf{i:05d}"] for i in range(header["num_leaves"])]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"checkpoint {path} is unreadable: {e}") from e
    leaves, treedef = jax.tree_util.tree_flatten(template)
    if str(treedef) != header["treedef"] or len(leaves) != len(arrays):
        raise ValueError(f"checkpoint {path} does not match this run's structure (was the "
                         "config changed?)")
    restored = []
    for t, a in zip(leaves, arrays):
        if _is_key(t):
            restored.append(jax.random.wrap_key_data(a, impl=jax.random.key_impl(t)))
        elif not hasattr(t, "dtype"):  # a Python number
            restored.append(type(t)(a.item()))
        else:
            if a.shape != np.shape(t):
                raise ValueError(f"checkpoint {path}: leaf shape {a.shape} != {np.shape(t)}")
            restored.append(jax.numpy.asarray(a, dtype=t.dtype))
    return jax.tree_util.tree_unflatten(treedef, restored), header["meta"]

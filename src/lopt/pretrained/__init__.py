"""Meta-trained learned optimizers shipped with lopt.

``lopt.optimizer()`` is the default (the meta-trained hierarchical optimizer) as an optax
transformation; ``lopt.optimizer("NAME")`` picks another shipped one and
``lopt.optimizer(weights="file.safetensors")`` any lopt weights file. How each was meta-trained
is in its model card (``lopt.pretrained.card(NAME)``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optax

#: The optimizer ``lopt.optimizer()`` returns.
DEFAULT = "hierarchical"
FOLDER = Path(__file__).parent
#: Baseline records of the held-out tasks shipped beside the weights (read-only store root).
BASELINES = FOLDER / "baselines"


def available() -> list[str]:
    """Names of the shipped optimizers."""
    return sorted(p.stem for p in FOLDER.glob("*.safetensors"))


def weights_path(name: str | None = None) -> Path:
    """Path of the shipped weights ``name`` (default: ``DEFAULT``)."""
    name = DEFAULT if name is None else name
    path = FOLDER / f"{name}.safetensors"
    if not path.exists():
        have = ", ".join(available()) or "none"
        raise ValueError(f"no shipped optimizer named {name!r}; shipped: {have}")
    return path


def load_pretrained(name: str | None = None, *, weights: str | os.PathLike | None = None):
    """``(theta, learned optimizer, card)`` of a shipped optimizer or of a weights file."""
    from lopt.weights import load

    if weights is not None and name is not None:
        raise ValueError("give a shipped optimizer name or a weights file, not both")
    return load(weights if weights is not None else weights_path(name))


def card(name: str | None = None) -> dict[str, Any]:
    """The model card (architecture, config, provenance) of a shipped optimizer."""
    return load_pretrained(name)[2]


def optimizer(name: str | None = None, *,
              weights: str | os.PathLike | None = None) -> optax.GradientTransformationExtraArgs:
    """A meta-trained learned optimizer as an optax transformation; nothing to tune.

    Its ``update(grads, state, params, value=loss)`` needs ``params`` and the training loss;
    pass ``valid_loss=`` every so often if you have a validation loss (it helps).
    """
    theta, learned, _ = load_pretrained(name, weights=weights)
    return learned.optimizer(theta)

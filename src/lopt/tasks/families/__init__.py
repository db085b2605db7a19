"""The task families, registered by name and imported on first use."""

from __future__ import annotations

import importlib

from lopt.tasks.base import TaskFamily

#: name -> "module:Class". In-distribution families feed meta-training and held-out tasks.
_REGISTRY = {
    "mlp": "lopt.tasks.families.mlp:MLPClassifier",
    "conv2d": "lopt.tasks.families.conv:Conv2DClassifier",
    "conv1d": "lopt.tasks.families.conv:Conv1DClassifier",
    "autoencoder": "lopt.tasks.families.autoencoder:MLPAutoencoder",
    "vae": "lopt.tasks.families.vae:VAE",
    "rnn_lm": "lopt.tasks.families.rnn_lm:RNNLanguageModel",
    "regression": "lopt.tasks.families.regression:Regression",
    "quadratic": "lopt.tasks.families.quadratic:Quadratic",
    "test_function": "lopt.tasks.families.test_functions:TestFunction",
    # Out-of-distribution families: meta-training never sees them.
    "transformer_lm": "lopt.tasks.families.transformer_lm:TransformerLanguageModel",
    "flow": "lopt.tasks.families.flow:NormalisingFlow",
}

#: Families that meta-training never sees.
OOD_FAMILIES = ("transformer_lm", "flow")

_CACHE: dict[str, TaskFamily] = {}


def family_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_family(name: str) -> TaskFamily:
    """The task family called ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown task family {name!r}; allowed: {', '.join(_REGISTRY)}")
    if name not in _CACHE:
        module, cls = _REGISTRY[name].split(":")
        _CACHE[name] = getattr(importlib.import_module(module), cls)()
    return _CACHE[name]

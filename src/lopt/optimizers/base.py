"""The interface every learned optimizer implements.

A learned optimizer is a hashable description (architecture and config) with
``init(key) -> theta`` — a pytree of arrays, the meta-parameters — and
``optimizer(theta) -> optax.GradientTransformationExtraArgs``. The transformation's ``update``
takes the training loss as ``value=`` and, optionally, the validation loss as ``valid_loss=``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import optax

Theta = Any


class LearnedOptimizer(abc.ABC):
    """Base class; subclasses are frozen dataclasses whose fields are their config."""

    #: Architecture name used in weights files and ``lopt.optimizer(name)``.
    name: str = ""

    @abc.abstractmethod
    def init(self, key) -> Theta:
        """Initial meta-parameters."""

    @abc.abstractmethod
    def optimizer(self, theta: Theta) -> optax.GradientTransformationExtraArgs:
        """The optax transformation that these meta-parameters define."""

    def _transformation(self, theta, init_fn) -> optax.GradientTransformationExtraArgs:
        """Wraps ``init_fn(params)`` and ``self._update(theta, grads, state, params, value,
        valid_loss)`` as an optax transformation (shared by the per-element optimizers)."""

        def update_fn(updates, state, params=None, *, value=None, valid_loss=None, **extra):
            del extra  # other chained transformations' keyword arguments
            if params is None:
                raise ValueError(f"the {self.name!r} learned optimizer needs params in update()")
            return self._update(theta, updates, state, params, value, valid_loss)

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)

    def __call__(self, theta: Theta) -> optax.GradientTransformationExtraArgs:
        return self.optimizer(theta)

    def config(self) -> dict:
        """JSON-serialisable config (the dataclass fields)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value

"""``LearnedOptimizer``: lopt's learned optimizers as a ``torch.optim.Optimizer``."""

from __future__ import annotations

import numbers
import os
from typing import Callable

import torch

from lopt.torch._adam import AdamRule
from lopt.torch._hierarchical import HierarchicalRule
from lopt.torch._mlp import MLPRule
from lopt.torch._weights import Weights

RULES = {r.name: r for r in (HierarchicalRule, MLPRule, AdamRule)}
_STATE_KEY = "lopt"


class LearnedOptimizer(torch.optim.Optimizer):
    """A meta-trained learned optimizer for PyTorch models; nothing to tune.

    Runs the weights files of lopt's JAX optimizers (``weights``: a path, default the shipped
    default optimizer; or ``name``, a shipped one) with the same arithmetic; the architecture
    comes from the file's model card. The learned optimizers read the training loss, so give it
    to every step: ``step(closure)`` (the closure recomputes the loss and gradients, as Lightning
    and Accelerate call it), ``step(loss=loss)``, or ``set_loss(loss)`` before a bare
    ``step()``. A validation loss now and then (every 10 steps, say) helps:
    ``step(..., valid_loss=v)`` or ``set_valid_loss(v)`` before a step.

    ``lr`` (per parameter group) multiplies the learned update: 1.0, the default, is the
    optimizer as meta-trained; it lets learning-rate schedulers and per-group scaling work.
    State is float32 for float32 and bfloat16 parameters alike. The hierarchical optimizer
    treats the tensors of all parameter groups as one model's (see ``_hierarchical``).
    """

    def __init__(self, params, weights: str | os.PathLike | None = None, *,
                 name: str | None = None, lr: float = 1.0):
        if not lr >= 0.0:
            raise ValueError(f"lr must be a non-negative multiplier of the learned update, got {lr}")
        self.weights = Weights(weights, name)
        arch = self.weights.learned.name
        if arch not in RULES:
            raise ValueError(f"{self.weights.path}: lopt.torch has no {arch!r} optimizer; "
                             f"it has {', '.join(RULES)}")
        self._rule = RULES[arch](self.weights)
        super().__init__(params, {"lr": lr})
        self._global: dict | None = None
        self._loss = self._valid_loss = None

    @property
    def architecture(self) -> str:
        """The architecture name of the weights (``"hierarchical"``, ``"mlp"``, ...)."""
        return self._rule.name

    def set_loss(self, value) -> None:
        """The training loss for the next step, for loops that call ``step()`` bare (as
        Accelerate's ``accelerator.backward(loss); optimizer.step()`` does)."""
        self._loss = value

    def set_valid_loss(self, value) -> None:
        """The validation loss for the next step only (a tensor or a number)."""
        self._valid_loss = value

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None, *, loss=None,
             valid_loss=None):
        """Updates the parameters that have gradients; returns the loss.

        ``closure`` re-evaluates the model and returns the loss (called with gradients on);
        or give the ``loss`` of the current gradients directly (else the one ``set_loss`` set).
        ``valid_loss`` overrides one set by ``set_valid_loss``.
        """
        if closure is not None:
            if loss is not None:
                raise ValueError("give the loss through the closure or as loss=, not both")
            with torch.enable_grad():
                loss = closure()
        if loss is None:
            loss = self._loss
        valid = self._valid_loss if valid_loss is None else valid_loss
        self._loss = self._valid_loss = None
        if loss is None and self._rule.needs_loss:
            raise ValueError(
                f"the {self.architecture!r} learned optimizer needs the training loss: call "
                "step(closure) with a closure that returns it, step(loss=loss), or "
                "set_loss(loss) before step()")
        items = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or p.numel() == 0:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("lopt.torch.LearnedOptimizer does not support sparse "
                                       "gradients")
                if p.is_complex():
                    raise TypeError("lopt.torch.LearnedOptimizer does not support complex "
                                    "parameters; optimise torch.view_as_real(p) instead")
                items.append((p, group["lr"]))
        if not items:
            return loss
        device = self._device()
        if self._global is None:
            self._global = self._rule.init_global(device)
        self._rule.step(items, self.state, self._global,
                        None if loss is None else _scalar(loss, device, "loss"),
                        None if valid is None else _scalar(valid, device, "valid_loss"))
        return loss

    def _device(self) -> torch.device:
        """Where the global state lives: the device of the first parameter."""
        return next(p for g in self.param_groups for p in g["params"]).device

    def state_dict(self) -> dict:
        """``torch.optim`` state dict plus the global state under ``"lopt"``."""
        out = super().state_dict()
        out[_STATE_KEY] = {"architecture": self.architecture,
                           "config": self.weights.learned.config(),
                           "state": dict(self._global or {})}
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores a ``state_dict``; continuing gives the same updates as never stopping.

        Unlike ``torch.optim``, state tensors keep their float32 dtype for bfloat16 parameters
        and are copied, never shared with ``state_dict``.
        """
        state_dict = dict(state_dict)
        extra = state_dict.pop(_STATE_KEY, None)
        if extra is None:
            raise ValueError("this state dict was not saved by lopt.torch.LearnedOptimizer "
                             f"(it has no {_STATE_KEY!r} entry)")
        mine = (self.architecture, self.weights.learned.config())
        if (extra["architecture"], extra["config"]) != mine:
            raise ValueError(f"the state dict is of a {extra['architecture']!r} optimizer with "
                             f"config {extra['config']}, this one is {mine[0]!r} with {mine[1]}")
        saved = state_dict["state"]
        super().load_state_dict({**state_dict, "state": {}})
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(ids, params):
            if i in saved:
                self.state[p] = _copy(saved[i], p.device)
        self._global = _copy(extra["state"], self._device()) if extra["state"] else None


def _scalar(value, device, what) -> torch.Tensor:
    """A float32 0-d tensor on ``device`` from a one-element tensor or a real number."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{what} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        return value.detach().reshape(()).to(device=device, dtype=torch.float32)
    if isinstance(value, numbers.Real):
        return torch.tensor(float(value), dtype=torch.float32, device=device)
    raise TypeError(f"{what} must be a tensor or a number, got {type(value).__name__}")


def _copy(value, device):
    """A deep copy with tensors moved to ``device`` (dtypes kept)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, copy=True)
    if isinstance(value, dict):
        return {k: _copy(v, device) for k, v in value.items()}
    return value

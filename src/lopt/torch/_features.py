"""Features shared by the learned optimizers, in PyTorch: clipped gradients, loss and step
features (the same arithmetic as ``lopt.optimizers.features``, in the same order)."""

from __future__ import annotations

import math

import torch

from lopt.optimizers.features import LOSS_DECAY, TIMESCALES


def clipped_gradient_(out: torch.Tensor, grad: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """Writes the float32 gradient, non-finite elements zeroed and clipped at ``bound``, to
    ``out`` (same shape)."""
    if grad.dtype == torch.float32:
        torch.nan_to_num(grad, 0.0, 0.0, 0.0, out=out)
    else:
        out.copy_(grad).nan_to_num_(0.0, 0.0, 0.0)
    return out.clamp_(-bound, bound)


def init_loss_stats(device) -> dict[str, torch.Tensor]:
    zero = torch.zeros((), device=device)
    return {"loss_mean": zero, "loss_var": zero,
            "loss_count": torch.zeros((), dtype=torch.int64, device=device)}


def loss_features(stats: dict, value: torch.Tensor, valid: torch.Tensor | None = None):
    """Clipped z-scores of the training and validation loss under the running statistics of the
    training loss, and a flag saying a validation loss arrived: ``(features [3], new stats)``.
    A non-finite loss gives zero features and leaves the statistics unchanged."""
    ok = torch.isfinite(value)
    value = torch.where(ok, value, 0.0)
    first = stats["loss_count"] == 0
    mean = torch.where(first, value, stats["loss_mean"])
    var = stats["loss_var"]
    std = var.sqrt() + 1e-8 * (1.0 + mean.abs())
    z = torch.where(first | ~ok, 0.0, ((value - mean) / std).clamp(-5.0, 5.0))
    if valid is None:
        zv = has_valid = torch.zeros_like(value)
    else:
        valid_ok = torch.isfinite(valid) & ~first
        zv = torch.where(valid_ok, ((valid - mean) / std).clamp(-5.0, 5.0), 0.0)
        has_valid = valid_ok.float()
    delta = value - mean
    new_mean = mean + (1 - LOSS_DECAY) * delta
    new_var = torch.where(first, 0.0, LOSS_DECAY * (var + (1 - LOSS_DECAY) * delta**2))
    new = {"loss_mean": torch.where(ok, new_mean, stats["loss_mean"]),
           "loss_var": torch.where(ok, new_var, var),
           "loss_count": stats["loss_count"] + ok.long()}
    return torch.stack([z, zv, has_valid]), new


def step_features(steps: list[int], device) -> torch.Tensor:
    """Sinusoidal features of each tensor's step count: ``[tensors, 2 * len(TIMESCALES)]``."""
    t = torch.tensor(steps, dtype=torch.float32, device=device)[:, None]
    phases = t / torch.tensor(TIMESCALES, dtype=torch.float32, device=device)
    return torch.cat([phases.sin(), phases.cos()], dim=1)


def size_features(shape: torch.Size) -> list[float]:
    """Tenths of log size, log first and last dimension; and is-scalar (``[4]``)."""
    dims = tuple(shape) or (1,)
    logs = [0.1 * math.log(max(d, 1)) for d in (math.prod(dims), dims[0], dims[-1])]
    return logs + [float(len(shape) == 0)]

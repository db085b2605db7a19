"""Step-size adaptation (``lopt.optimizers.step_adaptation``) in PyTorch.

Each tensor keeps the update applied last step (``state["previous"]``, which ``Item.add_``
fills in) and its log step multiplier: a scalar ``state["log_scale"]``, or per element
``state["element_log_scale"]``, which ``Item.add_`` applies chunk by chunk.
"""

from __future__ import annotations

import torch


def _unit(grad: torch.Tensor, previous: torch.Tensor):
    """Gradient (non-finite elements as zero) and previous update, each divided by its largest
    magnitude, in float32: their products can neither underflow nor overflow."""
    g = torch.nan_to_num(grad.float(), 0.0, 0.0, 0.0)
    u = previous.float()
    return g / g.abs().max().clamp(min=1e-30), u / u.abs().max().clamp(min=1e-30)


def descent_cosine(grad: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Cosine between ``-grad`` and the ``previous`` update (0 where either is zero), as
    ``lopt.optimizers.step_adaptation.descent_cosine``."""
    g, u = _unit(grad, previous)
    norms = (torch.dot(g, g) * torch.dot(u, u)).sqrt()
    ok = norms > 0
    return torch.where(ok, -torch.dot(g, u) / torch.where(ok, norms, 1.0), 0.0)


def descent_agreement(grad: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Per element, ``-grad * previous`` over the product of their RMS, clipped to [-1, 1], as
    ``lopt.optimizers.step_adaptation.descent_agreement``."""
    g, u = _unit(grad, previous)
    norms = (g.square().mean() * u.square().mean()).sqrt()
    ok = norms > 0
    return torch.where(ok, -g * u / torch.where(ok, norms, 1.0), 0.0).clamp_(-1.0, 1.0)


def adapt(works, *, rate: float, max_log_scale: float, per_element: bool, device):
    """Moves each tensor's log step multiplier by ``rate`` times its descent signal; returns the
    per-tensor multipliers ``[T]``, or None with ``per_element`` (``Item.add_`` applies them)."""
    scales = []
    for w in works:
        state = w.state
        if "previous" not in state:
            state["previous"] = torch.zeros(w.n, dtype=torch.float32, device=w.flat.device)
            if per_element:
                state["element_log_scale"] = torch.zeros_like(state["previous"])
            else:
                state["log_scale"] = torch.zeros((), dtype=torch.float32, device=w.flat.device)
        if per_element:
            signal = descent_agreement(w.grad, state["previous"])
            state["element_log_scale"].add_(signal, alpha=rate).clamp_(-max_log_scale,
                                                                       max_log_scale)
        else:
            cos = descent_cosine(w.grad, state["previous"])
            state["log_scale"] = (state["log_scale"] + rate * cos).clamp(-max_log_scale,
                                                                         max_log_scale)
            scales.append(state["log_scale"].to(device))
    return None if per_element else torch.stack(scales).exp()

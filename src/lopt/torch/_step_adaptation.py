"""Per-tensor step-size adaptation (``lopt.optimizers.step_adaptation``) in PyTorch."""

from __future__ import annotations

import torch


def descent_cosine(grad: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Cosine between ``-grad`` and the ``previous`` update (0 where either is zero; non-finite
    gradient elements count as zero), as ``lopt.optimizers.step_adaptation.descent_cosine``."""
    g = torch.nan_to_num(grad.float(), 0.0, 0.0, 0.0)
    u = previous.float()
    g = g / g.abs().max().clamp(min=1e-30)
    u = u / u.abs().max().clamp(min=1e-30)
    norms = (torch.dot(g, g) * torch.dot(u, u)).sqrt()
    ok = norms > 0
    return torch.where(ok, -torch.dot(g, u) / torch.where(ok, norms, 1.0), 0.0)


def step_multipliers(works, *, rate: float, max_log_scale: float, device) -> torch.Tensor:
    """``[T]``: each tensor's adapted step multiplier, after moving its log by ``rate`` times
    the cosine of its gradient with its last update (``state["previous"]``, which
    ``Item.add_`` fills in with the update it applies)."""
    scales = []
    for w in works:
        state = w.state
        if "previous" not in state:
            state["previous"] = torch.zeros(w.n, dtype=torch.float32, device=w.flat.device)
            state["log_scale"] = torch.zeros((), dtype=torch.float32, device=w.flat.device)
        cos = descent_cosine(w.grad, state["previous"])
        state["log_scale"] = (state["log_scale"] + rate * cos).clamp(-max_log_scale,
                                                                     max_log_scale)
        scales.append(state["log_scale"].to(device))
    return torch.stack(scales).exp()

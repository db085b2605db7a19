"""Step-size adaptation (``lopt.optimizers.step_adaptation``) in PyTorch.

Each tensor keeps the update applied last step (``state["previous"]``, which ``Item.add_``
fills in) and its log step multiplier: a scalar ``state["log_scale"]``, or per element
``state["element_log_scale"]``, which ``Item.add_`` applies chunk by chunk. The descent signals
are computed a chunk at a time too, so no parameter-sized temporary is made.
"""

from __future__ import annotations

import torch

from lopt.torch._per_element import chunk_spans


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(x.float(), 0.0, 0.0, 0.0)


def _unit_sums(grad: torch.Tensor, previous: torch.Tensor, chunk: int):
    """The inverse largest magnitudes of the gradient (non-finite elements as zero) and of the
    previous update, and the sums ``g.g``, ``u.u``, ``g.u`` of the two divided by them: float32
    unit vectors, whose products can neither underflow nor overflow."""
    spans = chunk_spans(grad.numel(), chunk)
    ginv = 1.0 / torch.stack([_finite(grad[a:b]).abs().amax() for a, b in spans]).amax().clamp(
        min=1e-30)
    uinv = 1.0 / torch.stack([previous[a:b].abs().amax() for a, b in spans]).amax().clamp(
        min=1e-30)
    sums = torch.zeros(3, dtype=torch.float32, device=grad.device)
    for a, b in spans:
        g, u = _finite(grad[a:b]).mul_(ginv), previous[a:b].float() * uinv
        sums += torch.stack([torch.dot(g, g), torch.dot(u, u), torch.dot(g, u)])
    return ginv, uinv, sums


def descent_cosine(grad: torch.Tensor, previous: torch.Tensor, chunk: int) -> torch.Tensor:
    """Cosine between ``-grad`` and the ``previous`` update (0 where either is zero), as
    ``lopt.optimizers.step_adaptation.descent_cosine``."""
    _, _, (gg, uu, gu) = _unit_sums(grad, previous, chunk)
    norms = (gg * uu).sqrt()
    ok = norms > 0
    return torch.where(ok, -gu / torch.where(ok, norms, 1.0), 0.0)


def add_descent_agreement_(log_scale: torch.Tensor, grad: torch.Tensor, previous: torch.Tensor,
                           *, rate: float, min_log_scale: float, max_log_scale: float,
                           chunk: int) -> None:
    """Adds ``rate`` times, per element, ``-grad * previous`` over the product of their RMS
    (clipped to [-1, 1], as ``lopt.optimizers.step_adaptation.descent_agreement``) to
    ``log_scale``, then clips it to ``[min_log_scale, max_log_scale]``."""
    ginv, uinv, (gg, uu, _) = _unit_sums(grad, previous, chunk)
    norms = (gg * uu).sqrt() / grad.numel()
    factor = torch.where(norms > 0, -1.0 / torch.where(norms > 0, norms, 1.0), 0.0)
    for a, b in chunk_spans(grad.numel(), chunk):
        signal = _finite(grad[a:b]).mul_(ginv).mul_(previous[a:b].float() * uinv)
        signal.mul_(factor).clamp_(-1.0, 1.0)
        log_scale[a:b].add_(signal, alpha=rate).clamp_(min_log_scale, max_log_scale)


def adapt(works, *, rate: float, max_log_scale: float, per_element: bool, device, chunk: int,
          early_rate: float = 0.0, early_steps: int = 0, min_log_scale: float | None = None):
    """Moves each tensor's log step multiplier by ``rate`` (``early_rate`` over its first
    ``early_steps`` steps) times its descent signal, reading ``chunk`` elements at a time;
    returns the per-tensor multipliers ``[T]``, or None with ``per_element`` (``Item.add_``
    applies them). The multipliers stay in ``[min_log_scale, max_log_scale]`` (None:
    ``-max_log_scale``)."""
    lowest = -max_log_scale if min_log_scale is None else min_log_scale
    scales = []
    for w in works:
        state = w.state
        if "previous" not in state:
            state["previous"] = torch.zeros(w.n, dtype=torch.float32, device=w.flat.device)
            if per_element:
                state["element_log_scale"] = torch.zeros_like(state["previous"])
            else:
                state["log_scale"] = torch.zeros((), dtype=torch.float32, device=w.flat.device)
        count = state.get("adapt_count", 0)
        step_rate = early_rate if count < early_steps else rate
        state["adapt_count"] = count + 1
        if per_element:
            add_descent_agreement_(state["element_log_scale"], w.grad, state["previous"],
                                   rate=step_rate, min_log_scale=lowest,
                                   max_log_scale=max_log_scale, chunk=chunk)
        else:
            cos = descent_cosine(w.grad, state["previous"], chunk)
            state["log_scale"] = (state["log_scale"] + step_rate * cos).clamp(lowest,
                                                                              max_log_scale)
            scales.append(state["log_scale"].to(device))
    return None if per_element else torch.stack(scales).exp()

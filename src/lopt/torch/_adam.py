"""Learned Adam (``lopt.optimizers.LearnedAdam``) in PyTorch: ``optax.adam`` with the
meta-learned hyperparameters. It needs no loss. Moments are float32 for every parameter dtype."""

from __future__ import annotations

import torch

from lopt.torch._rule import Rule


class AdamRule(Rule):
    name = "learned_adam"
    needs_loss = False

    def __init__(self, weights):
        super().__init__(weights)
        self._hyper: dict[torch.device, tuple] = {}

    def hyperparameters(self, device) -> tuple[torch.Tensor, ...]:
        """``(learning rate, b1, b2, eps)`` as ``LearnedAdam.hyperparameters`` computes them."""
        if device not in self._hyper:
            th = self.weights.on(device)
            self._hyper[device] = (th["log_lr"].exp(), 1 - torch.sigmoid(th["one_minus_b1"]),
                                   1 - torch.sigmoid(th["one_minus_b2"]), th["log_eps"].exp())
        return self._hyper[device]

    def step(self, items, state, glob, loss, valid) -> None:
        for p, lr in items:
            learning_rate, b1, b2, eps = self.hyperparameters(p.device)
            st = state[p]
            if not st:
                st.update(step=0, mu=torch.zeros_like(p, dtype=torch.float32),
                          nu=torch.zeros_like(p, dtype=torch.float32))
            g = p.grad.float()
            st["step"] += 1
            mu = st["mu"].mul_(b1).add_((1 - b1) * g)
            nu = st["nu"].mul_(b2).add_((1 - b2) * (g * g))
            mu_hat = mu / (1 - _power(b1, st["step"]))
            nu_hat = nu / (1 - _power(b2, st["step"]))
            update = -learning_rate * (mu_hat / (nu_hat.sqrt() + eps))
            if lr != 1.0:
                update.mul_(lr)
            p.add_(update if p.dtype == torch.float32 else update.to(p.dtype))


def _power(base: torch.Tensor, exponent: int) -> torch.Tensor:
    """``base ** exponent`` correctly rounded to float32, as XLA computes it (PyTorch's float32
    power can be an ulp off, and ``1 - b2 ** t`` turns an ulp into 2e-5 of the update)."""
    return (base.double() ** exponent).float()

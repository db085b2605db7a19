"""The per-parameter MLP learned optimizer (``lopt.optimizers.PerParameterMLP``) in PyTorch:
the per-element network with a context from step, loss and tensor-size features only."""

from __future__ import annotations

from lopt.torch._rule import PerElementRule


class MLPRule(PerElementRule):
    name = "mlp"

    def context(self, works, glob, loss_f, rms, summaries, align):
        device = loss_f.device
        th = self.weights.on(device)
        step_f, size_f = self.step_and_size_features(works, device)
        shared = step_f @ th["context.step"] + loss_f @ th["context.loss"]
        return shared + size_f @ th["context.size"], None

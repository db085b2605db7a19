"""The hierarchical learned optimizer (``lopt.optimizers.Hierarchical``) in PyTorch: a per-tensor
LSTM, batched over tensors, gives each tensor's per-element network its context.

All tensors of all parameter groups are the tensors of one model, as the JAX optimizer sees
one pytree: the LSTM runs over them as one batch and its pooled output, which every tensor reads
at the next step, is their mean (so their order does not matter). A tensor without a gradient
at a step sits that step out, its LSTM state waiting, as ``torch.optim`` skips it.
"""

from __future__ import annotations

import torch

from lopt.torch._per_element import G, K, P, init_state
from lopt.torch._rule import PerElementRule


class HierarchicalRule(PerElementRule):
    name = "hierarchical"
    summaries = True

    def __init__(self, weights):
        super().__init__(weights)
        self.alignment = self.learned.alignment

    def init_tensor_state(self, p):
        th = self.weights.on(p.device)
        return {**init_state(p), "lstm_h": th["lstm_init.h"].clone(),
                "lstm_c": th["lstm_init.c"].clone(), "feedback": th["feedback_init"].clone()}

    def init_global(self, device):
        return {**super().init_global(device),
                "pooled": torch.zeros(self.learned.pool_size, device=device)}

    def context(self, works, glob, loss_f, rms, summaries, align):
        device = loss_f.device
        th = self.weights.on(device)
        n = len(works)
        step_f, size_f = self.step_and_size_features(works, device)
        lstm_in = torch.cat([_tensor_features(rms, summaries), size_f, loss_f.expand(n, -1),
                             self._gather(works, "feedback", device),
                             glob["pooled"].expand(n, -1)], dim=1)
        w = th["lstm.w"]
        if align is not None:  # the alignment rows go between the inputs and h, as in JAX
            n_in = self.learned.lstm_inputs
            w = torch.cat([w[:n_in], th["align.w"], w[n_in:]])
            lstm_in = torch.cat([lstm_in, align], dim=1)
        h, c = _lstm_step(w, th["lstm.b"], lstm_in, self._gather(works, "lstm_h", device),
                          self._gather(works, "lstm_c", device))
        pooled = torch.tanh(h @ th["pool.w"] + th["pool.b"]).mean(0)
        biases = h @ th["context.lstm"] + step_f @ th["context.step"] + size_f @ th["context.size"]
        return biases, (h, c, pooled)

    def finish(self, works, means, glob, extra):
        h, c, pooled = extra
        th = self.weights.on(h.device)
        feedback = torch.tanh(means @ th["feedback.w"] + th["feedback.b"])
        for key, value in (("lstm_h", h), ("lstm_c", c), ("feedback", feedback)):
            torch._foreach_copy_([w.state[key] for w in works], list(value.unbind()))
        glob["pooled"] = pooled

    @staticmethod
    def _gather(works, key, device):
        return torch.stack([w.state[key].to(device) for w in works])


def _lstm_step(w, b, x, h, c):
    """One LSTM step batched over rows, as ``lopt.optimizers.nets.lstm_step``."""
    z = torch.cat([x, h], dim=1) @ w + b
    i, f, g, o = z.chunk(4, dim=1)
    c = torch.sigmoid(f + 1.0) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _tensor_features(rms, summaries) -> torch.Tensor:
    """``lopt.optimizers.features.tensor_features`` but the size features, ``[T, 35]``: mean
    log-magnitude, mean sign and log variance of momenta, second moments and values; log RMS of
    parameter and gradient."""
    logmag, sign, rms_centred = summaries.unbind(1)  # rows p, m (K), v (K)
    logvar = 2 * (rms_centred + 1e-30).log()
    out = [t for g in (slice(1, 1 + K), slice(1 + K, 1 + 2 * K), slice(0, 1))
           for t in (0.1 * logmag[:, g], sign[:, g], 0.1 * logvar[:, g])]
    return torch.cat([*out, 0.1 * (rms[:, [P, G]] + 1e-30).log()], dim=1)

"""What each lopt.torch architecture implements, and the driver shared by the two per-element
architectures (hierarchical and per-parameter MLP)."""

from __future__ import annotations

import torch

from lopt.torch._features import init_loss_stats, loss_features, size_features, step_features
from lopt.torch._per_element import Item, Network, apply_all, groups, init_state, reduce_all
from lopt.torch._step_adaptation import adapt
from lopt.torch._weights import Weights


class Rule:
    """An architecture's update rule. ``step`` updates ``items`` (``(param, lr)`` pairs whose
    gradients are set) in place, with per-tensor state in ``state[param]`` and the optimizer's
    global state in ``glob`` (made by ``init_global`` on the optimizer's first device)."""

    name = ""
    needs_loss = True

    def __init__(self, weights: Weights):
        self.weights, self.learned = weights, weights.learned

    def init_global(self, device) -> dict:
        return {}

    def step(self, items, state, glob: dict, loss, valid) -> None:
        raise NotImplementedError


class PerElementRule(Rule):
    """Clipped gradients, accumulators and the per-element network; subclasses give each
    tensor's context (the first layer's bias) in ``context`` and use the network's feedback
    in ``finish``."""

    summaries = False  # whether ``context`` needs the tensor summaries
    alignment = False  # whether it needs the gradient-momentum cosines

    def __init__(self, weights: Weights):
        super().__init__(weights)
        self._nets: dict[torch.device, Network] = {}

    def network(self, device) -> Network:
        if device not in self._nets:
            learned = self.learned
            self._nets[device] = Network(self.weights.on(device), exp_mult=learned.exp_mult,
                                         step_mult=learned.step_mult,
                                         max_log_scale=learned.max_log_scale,
                                         stall_rms=learned.stall_rms,
                                         collapse_ratio=learned.collapse_ratio)
        return self._nets[device]

    def init_tensor_state(self, p: torch.Tensor) -> dict:
        return init_state(p)

    def init_global(self, device) -> dict:
        return init_loss_stats(device)

    def step(self, items, state, glob, loss, valid) -> None:
        device = loss.device
        loss_f, stats = loss_features(glob, loss, valid)
        for p, _ in items:
            if not state[p]:
                state[p].update(self.init_tensor_state(p))
        kernel = getattr(self.learned, "kernel_step_mult", 1.0)  # rank >= 3: as in JAX
        parts = groups([Item(p, state[p], lr * kernel if p.dim() >= 3 else lr)
                        for p, lr in items], self.network)
        works = [it for g in parts for it in g.items]  # the order of all per-tensor rows
        rms, summaries, align = reduce_all(parts, multiple=self.learned.clip_multiple,
                                           summaries=self.summaries, device=device,
                                           alignment=self.alignment)
        biases, extra = self.context(works, glob, loss_f, rms, summaries, align)
        learned = self.learned
        multipliers = None
        if getattr(learned, "adapts", False):  # only rules with the adaptation's settings
            multipliers = adapt(works, rate=learned.adapt_rate,
                                max_log_scale=learned.adapt_max_log_scale,
                                min_log_scale=learned.adapt_min_log_scale,
                                per_element=learned.adapt_per_element, device=device,
                                chunk=self.network(device).chunk,
                                early_rate=learned.adapt_early_rate,
                                early_steps=learned.adapt_early_steps)
        means = apply_all(parts, self.network(device), rms, biases, multipliers)
        glob.update(stats)
        self.finish(works, means, glob, extra)

    def context(self, works, glob, loss_f, rms, summaries, align) -> tuple[torch.Tensor, object]:
        """Each tensor's context ``[T, width]`` (and anything ``finish`` needs), from the
        features' RMS ``[T, ROWS]``, summaries and alignment cosines (``reduce_all``)."""
        raise NotImplementedError

    def finish(self, works, means, glob, extra) -> None:
        pass

    @staticmethod
    def step_and_size_features(works, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``[tensors, 12]`` step features and ``[tensors, 4]`` size features."""
        sizes = torch.tensor([size_features(w.param.shape) for w in works], device=device)
        return step_features([w.state["step"] for w in works], device), sizes

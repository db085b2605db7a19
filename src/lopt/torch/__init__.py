"""lopt's learned optimizers as PyTorch optimizers, running the same weights files as the JAX
implementation with the same arithmetic (install with ``pip install 'lopt[torch]'``).

    opt = lopt.torch.LearnedOptimizer(model.parameters())   # the shipped default
    loss = loss_fn(model(x), y); loss.backward()
    opt.step(loss=loss); opt.zero_grad()
"""

try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError("lopt.torch needs PyTorch: pip install 'lopt[torch]'") from e

from lopt.torch.optimizer import LearnedOptimizer
from lopt.weights import WeightsError

__all__ = ["LearnedOptimizer", "WeightsError"]

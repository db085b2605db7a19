"""A learned optimizer's weights as PyTorch tensors: read with NumPy, one copy per device."""

from __future__ import annotations

import os

import numpy as np
import torch


class Weights:
    """Meta-parameters of one lopt weights file by dotted name (``"ffn.0.w"``), float32.

    ``learned`` is the JAX architecture (its config), ``card`` the file's model card.
    """

    def __init__(self, weights: str | os.PathLike | None = None, name: str | None = None):
        from lopt.pretrained import weights_path
        from lopt.weights import read

        if weights is not None and name is not None:
            raise ValueError("give a weights file or a shipped optimizer name, not both")
        self.path = os.fspath(weights) if weights is not None else os.fspath(weights_path(name))
        flat, self.learned, self.card = read(self.path)
        self._by_device = {torch.device("cpu"): {
            k: torch.from_numpy(np.array(v, np.float32)) for k, v in flat.items()}}

    def on(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The tensors on ``device`` (copied there once)."""
        device = torch.device(device)
        if device not in self._by_device:
            cpu = self._by_device[torch.device("cpu")]
            self._by_device[device] = {k: v.to(device) for k, v in cpu.items()}
        return self._by_device[device]

"""PNG figures of training curves (matplotlib, headless)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

COLORS = {"adam_tuned": "C0", "sgdm_tuned": "C1", "nadamw_list": "C2", "adam_global": "C3"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves_grid(records: Sequence[dict[str, Any]], path: str | Path, *,
                     title: str = "Training loss", max_panels: int = 16) -> Path:
    """One panel per task with the downsampled training curve of every stored baseline."""
    plt = _pyplot()
    records = list(records)[:max_panels]
    if not records:
        raise ValueError("no records to plot")
    cols = min(4, len(records))
    rows = math.ceil(len(records) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    for ax, record in zip(axes.flat, records):
        positive = True
        for name, b in record["baselines"].items():
            ys = b["curve"]["train"]
            positive &= all(y > 0 for y in ys if y == y)
            label = name + (f" (lr {b['hparams']['learning_rate']:.2g})"
                            if "learning_rate" in b.get("hparams", {}) else "")
            ax.plot(b["curve"]["steps"], ys, color=COLORS.get(name), label=label, lw=1.2)
        if positive:
            ax.set_yscale("log")
        ax.set_title(record["task_id"], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(records):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.supxlabel("step", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

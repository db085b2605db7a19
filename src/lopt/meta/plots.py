"""``lopt plot RUN``: meta-training curves of a run folder as PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise ValueError(f"{run_dir} has no metrics.jsonl (is it a meta-training run folder?)")
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill
    return rows


def _smooth(y, window):
    y = np.asarray(y, float)
    if len(y) < window:
        return y
    kernel = np.ones(window) / window
    return np.convolve(y, kernel, mode="valid")


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Meta-loss (overall and per family), estimate norm, throughput and evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    if not rows:
        raise ValueError(f"{run_dir}/metrics.jsonl is empty")
    steps = np.array([r["step"] for r in rows])
    window = max(1, len(rows) // 50)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0, 0]
    ax.plot(steps, [r["meta_loss"] for r in rows], color="0.8", lw=0.8, label="per step")
    ax.plot(steps[window - 1:], _smooth([r["meta_loss"] for r in rows], window), color="C0",
            label=f"mean of {window}")
    for key in sorted(k for k in rows[0] if k.startswith("meta_loss/")):
        ax.plot(steps[window - 1:], _smooth([r[key] for r in rows], window), lw=1, label=key[10:])
    ax.set(title="meta-loss (normalised)", xlabel="outer step")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    ax.semilogy(steps, [r["estimate_norm"] for r in rows], lw=0.8)
    ax.set(title="gradient-estimate norm", xlabel="outer step")
    ax = axes[1, 0]
    ax.plot(steps, [r["inner_steps_per_s"] for r in rows], lw=0.8)
    ax.set(title="inner steps per second", xlabel="outer step")
    ax = axes[1, 1]
    ev = [r for r in rows if "eval/relative_loss" in r]
    if ev:
        ax.plot([r["step"] for r in ev], [r["eval/relative_loss"] for r in ev], "o-",
                label="learned")
        ax.plot([r["step"] for r in ev], [r["eval/adam_1e-3_relative_loss"] for r in ev], "s--",
                label="Adam 1e-3")
        ax.legend(fontsize=8)
    else:  # an empty axis would read as a broken plot
        ax.text(0.5, 0.5, "no held-out evaluation yet\n(one every eval_every outer steps)",
                ha="center", va="center", transform=ax.transAxes, color="0.4")
        ax.set(xticks=[], yticks=[])
    ax.set(title="held-out mean train loss / initial", xlabel="outer step")
    fig.suptitle(f"meta-training: {Path(run_dir).name}")
    fig.tight_layout()
    out = Path(out) if out else Path(run_dir) / "meta_training.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

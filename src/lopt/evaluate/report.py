"""The benchmark report folder: ``summary.md``, ``results.json`` and PNG figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lopt.atomic import atomic_write_text
from lopt.evaluate.intervals import task_intervals
from lopt.evaluate.plots import _pyplot

BASELINE_LABELS = {"adam_tuned": "Adam, lr tuned per task", "adam_global": "Adam, best global lr"}
MODE_LABELS = {"valid": "fed validation loss every 10 steps", "train_only": "training loss only"}


def write_report(results: dict[str, Any], out: str | Path, *, title: str) -> Path:
    """Writes the report of ``benchmark()``'s results to the folder ``out``; returns it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    plot_differences(results, out / "differences.png")
    plot_wins(results, out / "wins.png")
    plot_examples(results, out / "curves.png")
    atomic_write_text(out / "summary.md", markdown(results, title=title))
    return out


def markdown(results: dict[str, Any], *, title: str) -> str:
    """The headline table (per mode) and the per-family table of the first mode."""
    lines = [f"# {title}", "",
             f"{results['num_steps']} inner steps per task; normalised loss is the training loss "
             "averaged over the run, 0 = best baseline, 1 = initial loss (lower is better). "
             f"Global Adam learning rate: {results['adam_global_lr']:.3g}.", "",
             "| mode | tasks | learned | tuned Adam | global Adam | wins vs tuned | "
             "wins vs global | median speed-up | diverged |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mode, r in results["modes"].items():
        s = r["summary"]
        lines.append(
            f"| {MODE_LABELS.get(mode, mode)} | {s['tasks']} | {s['mean_normalised']:.3f} | "
            f"{s['adam_tuned_mean_normalised']:.3f} | {s['adam_global_mean_normalised']:.3f} | "
            f"{s['win_fraction_tuned']:.0%} | {s['win_fraction_global']:.0%} | "
            f"{speedup_text(s['median_speedup'])} | {s['diverged_fraction']:.0%} |")
    for mode, r in results["modes"].items():
        lines += ["", f"## By family ({MODE_LABELS.get(mode, mode)})", "",
                  "| family | tasks | learned | tuned Adam | wins vs tuned | wins vs global | "
                  "median speed-up |", "|---|---|---|---|---|---|---|"]
        for family, s in sorted(r["by_family"].items()):
            lines.append(f"| {family} | {s['tasks']} | {s['mean_normalised']:.3f} | "
                         f"{s['adam_tuned_mean_normalised']:.3f} | {s['win_fraction_tuned']:.0%} | "
                         f"{s['win_fraction_global']:.0%} | "
                         f"{speedup_text(s['median_speedup'])} |")
    lines += uncertainty_lines(results)
    lines += ["", "Speed-up: steps tuned Adam needs to reach the learned optimizer's final loss "
              "over the steps the learned optimizer needed; \"not reached\" where on over half the "
              "tasks tuned Adam never reaches it within the run.", "",
              "Figures: `differences.png` (per-task normalised loss minus the baseline's; "
              "left of 0 the learned optimizer is better), `wins.png`, `curves.png`.", ""]
    return "\n".join(lines)


def uncertainty_lines(results: dict[str, Any]) -> list[str]:
    """The "how sure" table: 95% intervals over the sampled tasks (``intervals.task_intervals``)
    for the mean difference to each Adam baseline and the win fractions against them."""
    modes = {mode: r for mode, r in results["modes"].items() if r.get("tasks")}
    if not modes:
        return []
    lines = ["", "## How sure (95% intervals over the sampled tasks)", "",
             "| mode | learned - tuned Adam | learned - global Adam | wins vs tuned | "
             "wins vs global |", "|---|---|---|---|---|"]
    for mode, r in modes.items():
        iv = task_intervals(r["tasks"])
        s = r["summary"]
        diff = lambda b: s["mean_normalised"] - s[f"adam_{b}_mean_normalised"]  # noqa: E731
        lines.append(
            f"| {MODE_LABELS.get(mode, mode)} | "
            f"{diff('tuned'):+.4f} {interval_text(iv['difference_tuned'], '{:+.4f}')} | "
            f"{diff('global'):+.4f} {interval_text(iv['difference_global'], '{:+.4f}')} | "
            f"{s['win_fraction_tuned']:.0%} {interval_text(iv['wins_tuned'], '{:.0%}')} | "
            f"{s['win_fraction_global']:.0%} {interval_text(iv['wins_global'], '{:.0%}')} |")
    lines += ["", "Differences are in normalised loss (below 0 the learned optimizer is better); "
              "a bootstrap over tasks (paired) for the differences, Wilson's interval for the "
              "win fractions. They count only the choice of tasks: every run is seeded."]
    return lines


def interval_text(interval: tuple[float, float], fmt: str) -> str:
    """``[low, high]`` with ``fmt`` for each end; empty where the interval is undefined."""
    low, high = interval
    if not (math.isfinite(low) and math.isfinite(high)):
        return ""
    return f"[{fmt.format(low)}, {fmt.format(high)}]"


def speedup_text(x: float) -> str:
    """A median speed-up for people: \"not reached\" where tuned Adam never gets there."""
    return "not reached" if math.isinf(x) else f"{x:.2f}x"


def plot_differences(results: dict[str, Any], path: Path) -> Path:
    """Histograms over tasks of learned minus baseline normalised loss (the paper's Figure 3)."""
    plt = _pyplot()
    modes = list(results["modes"])
    fig, axes = plt.subplots(len(modes), len(BASELINE_LABELS), squeeze=False,
                             figsize=(4.2 * len(BASELINE_LABELS), 2.8 * len(modes)))
    # Most differences are a few hundredths: bins of equal width on a symmetric log axis (linear
    # within +-1e-3) show them as well as the rare large ones.
    edges = np.logspace(-3, 0, 16)
    bins = np.concatenate([-edges[::-1], [0.0], edges])
    for row, mode in zip(axes, modes):
        tasks = results["modes"][mode]["tasks"]
        for ax, (name, label) in zip(row, BASELINE_LABELS.items()):
            diff = np.clip(np.asarray([t["normalised"] - t[name] for t in tasks]), -1, 1)
            ax.hist([diff[diff < 0], diff[diff >= 0]], bins=bins, color=["C2", "C3"],
                    label=["learned better", "baseline better"], stacked=True, alpha=0.8)
            ax.set_xscale("symlog", linthresh=1e-3)
            ax.yaxis.get_major_locator().set_params(integer=True)  # counts of tasks
            ax.axvline(0, color="k", lw=0.8)
            ax.legend(fontsize=7, frameon=False)
            better = float(np.mean(diff < 0)) if diff.size else math.nan
            ax.set_title(f"vs {label}\n({MODE_LABELS.get(mode, mode)}; better on {better:.0%})",
                         fontsize=8)
            ax.set_xlabel("learned - baseline (normalised loss)", fontsize=8)
            ax.set_ylabel("tasks", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_wins(results: dict[str, Any], path: Path) -> Path:
    """Win fraction per family against both baselines (first mode), and overall."""
    plt = _pyplot()
    mode = next(iter(results["modes"]))
    fams = sorted(results["modes"][mode]["by_family"])
    rows = [results["modes"][mode]["by_family"][f] for f in fams]
    rows.append(results["modes"][mode]["summary"])
    labels = fams + ["all"]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(labels) + 2), 3.2))
    for i, (key, name) in enumerate((("win_fraction_tuned", "adam_tuned"),
                                     ("win_fraction_global", "adam_global"))):
        ax.bar(x + (i - 0.5) * 0.38, [r[key] for r in rows], width=0.38,
               label=f"vs {BASELINE_LABELS[name]}")
    ax.axhline(0.5, color="k", lw=0.6, ls=":")
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of tasks won")
    ax.set_title(f"Win fractions ({MODE_LABELS.get(mode, mode)})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_examples(results: dict[str, Any], path: Path, *, max_panels: int = 12) -> Path:
    """Training curves of the learned optimizer (each mode) and both Adam baselines."""
    plt = _pyplot()
    modes = list(results["modes"])
    first = results["modes"][modes[0]]["tasks"]
    picked, seen = [], set()
    for t in first:  # one task per family first, then the rest
        if t["family"] not in seen:
            picked.append(t["task_id"])
            seen.add(t["family"])
    picked += [t["task_id"] for t in first if t["task_id"] not in picked]
    picked = picked[:max_panels]
    cols = min(4, len(picked))
    rows = math.ceil(len(picked) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    for ax, task_id in zip(axes.flat, picked):
        base = results["baselines"][task_id]
        ax.plot(base["steps"], base["adam_tuned"], color="C0", lw=1.1, label="Adam tuned")
        ax.plot(base["steps"], base["adam_global"], color="C3", lw=1.1, label="Adam global")
        for i, mode in enumerate(modes):
            run = next(t for t in results["modes"][mode]["tasks"] if t["task_id"] == task_id)
            ax.plot(run["curve"]["steps"], run["curve"]["train"], color="C2", lw=1.3,
                    ls="-" if i == 0 else "--", label=f"lopt ({mode})")
        values = [y for y in base["adam_tuned"] if y == y]
        if values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_title(task_id, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(picked):]:
        ax.axis("off")
    fig.supxlabel("step", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, plt)


def _save(fig, path: Path, plt) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

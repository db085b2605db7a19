"""How the multiplier on convolution kernels' steps changes the learned optimizer, on the
*selection* subset.

The meta-trained hierarchical rule moves convolution kernels the right way by too little (see
``bench_step_size.py``). ``Hierarchical(kernel_step_mult=k)`` multiplies the steps of every
tensor of rank 3 or more by ``k``; this benchmarks one weights file at several ``k`` on the
selection tasks whose models have such tensors (the 1-D and 2-D convnets; every other task's
updates are unchanged by construction), both modes, 2,000 steps, and records each task's
normalised loss. The test subset is never read here. Each row is written as soon as it is done;
rows already in the results file for the same weights are kept, not rerun.

Run: python benchmarks/bench_kernel_step.py [--weights W] [--mults 1 1.5 2 3 4]
(writes benchmarks/results/kernel_step.{json,md}; about 5 minutes per multiplier on 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
from pathlib import Path

from lopt.compile_cache import enable_compilation_cache
from lopt.evaluate import BaselineStore
from lopt.evaluate.benchmark import benchmark
from lopt.pretrained import BASELINES, weights_path
from lopt.tasks.taskset import task_set
from lopt.weights import load

RESULTS = Path(__file__).parent / "results"
#: Families whose models have tensors of rank 3 or more.
KERNEL_FAMILIES = ("conv1d", "conv2d")


def measure(learned, theta, mult: float, steps: int) -> dict:
    """Per mode: summary and per-task normalised losses of ``learned`` at ``kernel_step_mult``
    ``mult`` on the selection subset's convnets."""
    tasks = task_set("held_out", families=KERNEL_FAMILIES, subset="selection")
    arch = dataclasses.replace(learned, kernel_step_mult=mult)
    store = BaselineStore(num_steps=steps, fallback=BASELINES)
    res = benchmark(tasks, arch, theta, num_steps=steps, store=store, progress=False)
    out = {}
    for mode, m in res["modes"].items():
        s = m["summary"]
        out[mode] = {
            "tasks": s["tasks"], "mean_normalised": s["mean_normalised"],
            "adam_tuned_mean_normalised": s["adam_tuned_mean_normalised"],
            "median_normalised": statistics.median(t["normalised"] for t in m["tasks"]),
            "win_fraction_tuned": s["win_fraction_tuned"],
            "diverged_fraction": s["diverged_fraction"],
            "per_task": {t["task_id"]: [t["normalised"], t["adam_tuned"]] for t in m["tasks"]}}
    return out


def write(rows: list[dict], weights: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernel_step.json").write_text(json.dumps({"weights": weights, "rows": rows},
                                                     indent=1))
    lines = [f"# Multiplier on convolution kernels' steps, selection subset ({weights})", "",
             "`python benchmarks/bench_kernel_step.py`: normalised loss averaged over the run "
             "(lower is better) on the selection subset's 1-D and 2-D convnets, fed the "
             "validation loss every 10 steps / training loss only, 2,000 steps. Every other "
             "task's updates are unchanged by the multiplier.", "",
             "| kernel_step_mult | tasks | mean (valid / train-only) | median | tuned Adam mean "
             "/ median | wins vs tuned | diverged |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        v, t = r["modes"]["valid"], r["modes"]["train_only"]
        tuned = [b for _, b in v["per_task"].values()]
        lines.append(
            f"| {r['kernel_step_mult']} | {v['tasks']} | {v['mean_normalised']:.4f} / "
            f"{t['mean_normalised']:.4f} | {v['median_normalised']:.4f} / "
            f"{t['median_normalised']:.4f} | {v['adam_tuned_mean_normalised']:.4f} / "
            f"{statistics.median(tuned):.4f} | {v['win_fraction_tuned']:.0%} / "
            f"{t['win_fraction_tuned']:.0%} | {v['diverged_fraction']:.0%} / "
            f"{t['diverged_fraction']:.0%} |")
    ids = sorted(rows[0]["modes"]["valid"]["per_task"]) if rows else []
    lines += ["", "Per task (normalised loss, valid / train-only; tuned Adam last):", "",
              "| task | " + " | ".join(f"x{r['kernel_step_mult']}" for r in rows)
              + " | tuned Adam |", "|---|" + "---|" * (len(rows) + 1)]
    for i in ids:
        cells = [f"{r['modes']['valid']['per_task'][i][0]:.3f} / "
                 f"{r['modes']['train_only']['per_task'][i][0]:.3f}" for r in rows]
        lines.append(f"| {i} | " + " | ".join(cells)
                     + f" | {rows[0]['modes']['valid']['per_task'][i][1]:.3f} |")
    (out / "kernel_step.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="weights file (default: shipped)")
    parser.add_argument("--mults", type=float, nargs="*", default=[1.0, 1.5, 2.0, 3.0, 4.0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    enable_compilation_cache()
    weights = str(args.weights or os.path.relpath(weights_path(), Path.cwd()))
    theta, learned, _ = load(weights)
    path = args.out / "kernel_step.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    rows = previous["rows"] if previous.get("weights") == weights else []
    for mult in args.mults:
        if any(r["kernel_step_mult"] == mult and r["steps"] == args.steps for r in rows):
            continue
        row = {"kernel_step_mult": mult, "steps": args.steps,
               "modes": measure(learned, theta, mult, args.steps)}
        rows = sorted([*rows, row], key=lambda r: r["kernel_step_mult"])
        write(rows, weights, args.out)
        print(f"kernel_step_mult {mult}: " + ", ".join(
            f"{m} {v['mean_normalised']:.4f}" for m, v in row["modes"].items()), flush=True)


if __name__ == "__main__":
    main()

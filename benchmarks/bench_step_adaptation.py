"""How the step-size adaptation's rate changes the learned optimizer, on the *selection* subset.

Benchmarks one weights file at several ``adapt_rate`` values (0: the learned rule alone), one
multiplier per tensor and (``--element-rates``) one per element, on the held-out selection
subset the shipped default is chosen on (``--per-family`` tasks of each family, or with
``--full`` all 60), both modes, 2,000 steps. The test subset is never read here. Each row is
written as soon as it is done, and rows already in the results file for the same weights are
kept, not rerun: an interrupted run continues where it stopped.

``--early-rate R --early-steps T`` gives every row a rate of R over the first T steps
(``step_adaptation.early_rate_schedule``; the row's rate after them).

Run: python benchmarks/bench_step_adaptation.py [--weights W] [--rates 0 0.02 0.05 0.1]
    [--element-rates 0.05 0.1] [--early-rate 0.3 --early-steps 50] [--full]
(writes benchmarks/results/step_adaptation.{json,md}; about 4 minutes per row on 2 cores,
about 8 with --full)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from lopt.compile_cache import enable_compilation_cache
from lopt.evaluate import BaselineStore
from lopt.evaluate.benchmark import benchmark
from lopt.pretrained import BASELINES, weights_path
from lopt.tasks.taskset import sample_tasks, task_set
from lopt.weights import load

RESULTS = Path(__file__).parent / "results"


def selection_tasks(per_family: int | None) -> list:
    """The selection sample (``per_family`` tasks of each family), or all of it for None."""
    if per_family is None:
        return task_set("held_out", subset="selection")
    return sample_tasks("held_out", per_family, subset="selection")


def score(learned, theta, per_family: int | None, steps: int) -> dict:
    tasks = selection_tasks(per_family)
    store = BaselineStore(num_steps=steps, fallback=BASELINES)
    res = benchmark(tasks, learned, theta, num_steps=steps, store=store, progress=False)
    return {mode: {"tasks": len(tasks), "mean_normalised": m["summary"]["mean_normalised"],
                   "adam_tuned_mean_normalised": m["summary"]["adam_tuned_mean_normalised"],
                   "win_fraction_tuned": m["summary"]["win_fraction_tuned"],
                   "win_fraction_global": m["summary"]["win_fraction_global"],
                   "median_speedup": m["summary"]["median_speedup"],
                   "diverged_fraction": m["summary"]["diverged_fraction"],
                   "by_family": {f: v["mean_normalised"] for f, v in m["by_family"].items()}}
            for mode, m in res["modes"].items()}


def write(rows: list[dict], weights: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_adaptation.json").write_text(json.dumps({"weights": weights, "rows": rows},
                                                         indent=1))
    lines = [f"# Step-size adaptation rate on the selection subset ({weights})", "",
             "`python benchmarks/bench_step_adaptation.py`: mean normalised loss over the run "
             "(lower is better), fed the validation loss every 10 steps / training loss only; "
             "2,000 steps, both modes, the held-out selection subset: two tasks per family "
             "(17 tasks) or, with `--full`, all 60.", "",
             "| tasks | adapt_rate | early rate x steps | multiplier per | learned (valid / "
             "train-only) | tuned Adam | wins vs tuned | wins vs global | diverged | 1-D convnets "
             "| autoencoders |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        v, t = r["modes"]["valid"], r["modes"]["train_only"]
        lines.append(
            f"| {v.get('tasks', 17)} | {r['adapt_rate']} | "
            f"{_early(r)} | "
            f"{'element' if r.get('per_element') else 'tensor'} | "
            f"{v['mean_normalised']:.4f} / {t['mean_normalised']:.4f} | "
            f"{v['adam_tuned_mean_normalised']:.4f} | {v['win_fraction_tuned']:.0%} / "
            f"{t['win_fraction_tuned']:.0%} | {v['win_fraction_global']:.0%} / "
            f"{t['win_fraction_global']:.0%} | {v['diverged_fraction']:.0%} / "
            f"{t['diverged_fraction']:.0%} | {v['by_family'].get('conv1d', float('nan')):.3f} / "
            f"{t['by_family'].get('conv1d', float('nan')):.3f} | "
            f"{v['by_family'].get('autoencoder', float('nan')):.3f} / "
            f"{t['by_family'].get('autoencoder', float('nan')):.3f} |")
    (out / "step_adaptation.md").write_text("\n".join(lines) + "\n")


def _early(row: dict) -> str:
    """The early-rate column: ``rate x steps``, or ``-`` without an early rate."""
    return f"{row['early_rate']} x {row['early_steps']}" if row.get("early_steps") else "-"


def _previous(out: Path, weights: str) -> list[dict]:
    """Rows already measured for ``weights`` (older files lack the later keys: their defaults)."""
    path = out / "step_adaptation.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    if data.get("weights") != weights:
        return []
    defaults = {"per_element": False, "per_family": 2, "steps": 2000, "early_rate": 0.0,
                "early_steps": 0}
    return [{**defaults, **r} for r in data["rows"]]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="weights file (default: shipped)")
    parser.add_argument("--rates", type=float, nargs="*", default=[0.0, 0.02, 0.05, 0.1],
                        help="rates with one multiplier per tensor")
    parser.add_argument("--element-rates", type=float, nargs="*", default=[0.05, 0.1],
                        help="rates with one multiplier per element")
    parser.add_argument("--early-rate", type=float, default=0.0,
                        help="rate over the first --early-steps steps of every row")
    parser.add_argument("--early-steps", type=int, default=0)
    parser.add_argument("--per-family", type=int, default=2)
    parser.add_argument("--full", action="store_true",
                        help="every task of the selection subset (overrides --per-family)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    enable_compilation_cache()
    weights = str(args.weights or os.path.relpath(weights_path(), Path.cwd()))
    theta, learned, _ = load(weights)
    rows = _previous(args.out, weights)
    per_family = None if args.full else args.per_family
    configs = [(r, False) for r in args.rates] + [(r, True) for r in args.element_rates]
    for rate, per_element in configs:
        arch = dataclasses.replace(learned, adapt_rate=rate, adapt_per_element=per_element,
                                   adapt_early_rate=args.early_rate,
                                   adapt_early_steps=args.early_steps)
        key = {"adapt_rate": rate, "adapt_max_log_scale": arch.adapt_max_log_scale,
               "per_element": per_element, "per_family": per_family, "steps": args.steps,
               "early_rate": args.early_rate, "early_steps": args.early_steps}
        if any({k: r.get(k) for k in key} == key for r in rows):
            continue
        rows.append({**key, "modes": score(arch, theta, per_family, args.steps)})
        write(rows, weights, args.out)
        print(f"adapt_rate {rate} per {'element' if per_element else 'tensor'}: " + ", ".join(
            f"{m} {v['mean_normalised']:.4f}" for m, v in rows[-1]["modes"].items()), flush=True)


if __name__ == "__main__":
    main()

"""Compares two ``lopt benchmark`` reports of the same tasks: is a candidate better than the
incumbent beyond the choice of tasks?

    python scripts/compare.py INCUMBENT_REPORT CANDIDATE_REPORT [--out compare.md]

A selection score moves by a few 1e-4 between snapshots of one run; this puts the candidate's
per-task differences to the incumbent next to a paired bootstrap interval over tasks
(``lopt.evaluate.intervals``), so a difference inside the noise reads as one. Per mode: both
means, the mean difference with its interval, how many tasks each is better on, the wins
against tuned Adam of each, and the same by family.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lopt.evaluate.intervals import mean_difference_interval

MODES = {"valid": "fed validation loss every 10 steps", "train_only": "training loss only"}


def load_report(path: Path) -> dict:
    """``results.json`` of a report folder (or the file itself)."""
    path = Path(path)
    return json.loads((path / "results.json" if path.is_dir() else path).read_text())


def _rows(report: dict, mode: str) -> dict[str, dict]:
    return {t["task_id"]: t for t in report["modes"][mode]["tasks"]}


def compare_mode(incumbent: dict, candidate: dict, mode: str) -> dict:
    """Paired comparison of one mode over the tasks both reports scored (they must be the
    same tasks: a difference over different ones says nothing)."""
    a, b = _rows(incumbent, mode), _rows(candidate, mode)
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise ValueError(f"the reports scored different tasks ({len(only)} in one only, e.g. "
                         f"{only[:3]}); compare reports of the same tasks")
    ids = sorted(a)

    def summary(keys):
        x = np.array([float(a[k]["normalised"]) for k in keys])
        y = np.array([float(b[k]["normalised"]) for k in keys])
        low, high = mean_difference_interval(y, x)
        return {"tasks": len(keys), "incumbent": float(x.mean()), "candidate": float(y.mean()),
                "difference": float((y - x).mean()), "interval": [low, high],
                "candidate_better": int((y < x).sum()), "incumbent_better": int((y > x).sum()),
                "wins_tuned": [sum(bool(r[k]["win_tuned"]) for k in keys) for r in (a, b)]}

    families = sorted({a[k]["family"] for k in ids})
    return {"all": summary(ids),
            "by_family": {f: summary([k for k in ids if a[k]["family"] == f]) for f in families}}


def compare(incumbent: dict, candidate: dict) -> dict:
    modes = [m for m in MODES if m in incumbent["modes"] and m in candidate["modes"]]
    if not modes:
        raise ValueError("the reports share no mode")
    return {m: compare_mode(incumbent, candidate, m) for m in modes}


def _line(name: str, s: dict) -> str:
    low, high = s["interval"]
    interval = "" if np.isnan(low) else f" [{low:+.4f}, {high:+.4f}]"
    return (f"| {name} | {s['tasks']} | {s['incumbent']:.4f} | {s['candidate']:.4f} | "
            f"{s['difference']:+.4f}{interval} | {s['candidate_better']} / "
            f"{s['incumbent_better']} | {s['wins_tuned'][0]} / {s['wins_tuned'][1]} |")


def markdown(result: dict, incumbent: str, candidate: str) -> str:
    out = [f"# {candidate} against {incumbent}", "",
           "Mean normalised loss (lower is better); difference = candidate - incumbent, with a "
           "95% paired bootstrap interval over tasks; tasks each is better on; wins against "
           "tuned Adam (incumbent / candidate).", ""]
    for mode, r in result.items():
        out += [f"## {MODES[mode]}", "",
                "| tasks | n | incumbent | candidate | difference | better (cand. / inc.) "
                "| wins vs tuned (inc. / cand.) |", "|---|---|---|---|---|---|---|",
                _line("all", r["all"])]
        out += [_line(f, s) for f, s in r["by_family"].items()]
        out.append("")
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("incumbent", type=Path, help="report folder (or results.json)")
    parser.add_argument("candidate", type=Path, help="report folder (or results.json)")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args(argv)
    text = markdown(compare(load_report(args.incumbent), load_report(args.candidate)),
                    str(args.incumbent), str(args.candidate))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

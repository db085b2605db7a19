"""Ships meta-trained weights as a lopt.pretrained optimizer, choosing among candidate runs on
the held-out *selection* subset (never the test subset, which only the final report sees).

    python scripts/ship.py meta_runs/hierarchical-a [meta_runs/hierarchical-b SOUP.safetensors ...] \
        --name hierarchical [--per-family 1] [--steps 2000] [--jobs 2] [--no-select] \
        [--set adapt_rate=0.05 ...]

Each candidate (a run's latest ``theta.safetensors``, or a weights file such as a soup of runs
from ``scripts/soup.py``) is benchmarked on a sample of the selection subset
(both modes); the one with the lowest mean normalised loss is written to
``src/lopt/pretrained/NAME.safetensors`` with a model card recording how it was made.
``--set KEY=VALUE`` changes a config field that meta-training does not use (a guard, the
step-size adaptation) for every candidate before it is scored and shipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from lopt.compile_cache import enable_compilation_cache
from lopt.evaluate import BaselineStore
from lopt.evaluate.benchmark import benchmark
from lopt.meta.trainer import INIT_CARD
from lopt.pretrained import BASELINES, FOLDER
from lopt.tasks.taskset import TASK_SET_VERSION, sample_tasks
from lopt.weights import load, read, save


def provenance(run: Path, outer_steps: int) -> dict:
    """How the weights of ``run`` at ``outer_steps`` were made (metrics up to that step)."""
    config = json.loads((run / "config.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    rows = [r for r in rows if r["step"] <= outer_steps]
    last = rows[-1] if rows else {}
    return {
        "run": run.name, "task_set_version": TASK_SET_VERSION, "families": config["families"],
        "estimator": config["estimator"], "sigma": config["sigma"],
        "warmup": {k: config[k] for k in ("warmup_steps", "warmup_estimator",
                                          "warmup_truncation")},
        "pools": {k: config[k] for k in ("num_pools", "pairs", "rotate_every")},
        "normalise": config["normalise"], "objective": config["objective"],
        "train_only_fraction": config.get("train_only_fraction", 0.0),
        "truncation": config["truncation"], "horizon": config["horizon"],
        "outer_lr": config["outer_lr"], "seed": config["seed"],
        "outer_steps": outer_steps,
        "inner_steps": int(sum(r.get("inner_steps", 0) for r in rows)),
        "wall_time_s": round(last.get("wall_time", 0.0)),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, one core per run",
        "commit": _commit(),
        **_parent(config.get("init_weights"), run),
    }


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip()


def _parent(init_weights: str | None, run: Path | None = None) -> dict:
    """Provenance of the weights a warm-started run began from (their cost counts too): from
    the card the run recorded when it began (``init_card.json``), else the file's own."""
    if not init_weights:
        return {}
    recorded = run / INIT_CARD if run is not None else None
    record = json.loads(recorded.read_text()) if recorded and recorded.exists() else {}
    if record.get("weights") == init_weights:
        card = record["card"]
    elif FOLDER.resolve() in Path(init_weights).resolve().parents:
        # shipping overwrites these files: the card there now may describe later weights
        raise ValueError(f"a run started from {init_weights}, a shipped file, and recorded no "
                         f"{INIT_CARD} (runs before it was kept): the file's card may no longer "
                         "describe the weights the run started from; point the run's "
                         "config.json init_weights at a copy that does not change (a run's "
                         "snapshot or a soup file)")
    else:
        _, _, card = read(init_weights)
    # a run's snapshot: from its run's metrics; a soup: its card, with its ingredients' lineage
    parent = {k: v for k, v in weights_provenance(init_weights, card).items() if k != "machine"}
    return {"started_from": {"weights": init_weights, **parent}}


def run_of(weights) -> Path | None:
    """The run folder a weights file lies in (a run's ``theta.safetensors`` or a snapshot)."""
    return next((d for d in Path(weights).resolve().parents if (d / "metrics.jsonl").exists()),
                None)


def weights_provenance(weights, card: dict) -> dict:
    """How a weights file was made: from its run's metrics when it lies in a run folder (its
    own card records little more than the step), else its card's."""
    prov = card.get("provenance", {})
    run = run_of(weights)
    if run is None or "outer_steps" not in prov:
        return prov
    return {k: v for k, v in provenance(run, int(prov["outer_steps"])).items() if k != "commit"}


def lineage(prov: dict):
    """The provenances of every run segment behind a card: the run itself, the runs it was
    warm-started from, and for a soup its ingredients' (a soup is not a segment itself)."""
    while prov:
        if "soup" in prov:
            for ingredient in prov["soup"]:
                yield from lineage(ingredient)
        else:
            yield prov
        prov = prov.get("started_from", {})


def lineage_cost(cards: list[dict]) -> dict:
    """What making weights with these provenances cost: each run counted once, up to the
    furthest step any of them used (a checkpoint's cost includes that of the run it continued)."""
    runs: dict = {}
    for card in cards:
        for prov in lineage(card):
            key = prov.get("run", id(prov))
            runs[key] = max(runs.get(key, prov), prov, key=lambda p: p.get("outer_steps", 0))
    segments = list(runs.values())
    out = {k: sum(p.get(k, 0) for p in segments)
           for k in ("outer_steps", "inner_steps", "wall_time_s")}
    out["estimator"] = "+".join(dict.fromkeys(p["estimator"] for p in segments
                                              if "estimator" in p))
    machine = next((c["machine"] for c in cards if "machine" in c), None)
    return {**out, **({"machine": machine} if machine else {})}


def _weights(candidate: Path) -> Path:
    """A candidate's weights: a run folder's latest, or a weights file (``scripts/soup.py``)."""
    return candidate if candidate.suffix == ".safetensors" else candidate / "theta.safetensors"


def _provenance(candidate: Path, card: dict) -> dict:
    """The shipped card's provenance; a warm-started run's also gives its whole lineage's cost
    (``total``), as a soup's top level does."""
    if candidate.suffix != ".safetensors":
        prov = provenance(candidate, int(card["provenance"]["outer_steps"]))
    else:
        prov = {"weights": str(candidate), "task_set_version": TASK_SET_VERSION,
                **weights_provenance(candidate, card), "commit": _commit()}
    if "started_from" in prov:
        prov["total"] = lineage_cost([prov])
    return prov


def parse_setting(text: str) -> tuple[str, object]:
    """``"KEY=VALUE"`` with a JSON value (a number, ``true``/``false``) into ``(KEY, value)``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"{text!r}: the value must be a JSON number or "
                                         "true/false") from None


def configured(learned, settings: dict):
    """``learned`` with the config fields in ``settings`` replaced (a clear error for a field
    the architecture does not have)."""
    fields = {f.name for f in dataclasses.fields(learned)}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise SystemExit(f"--set: {learned.name!r} has no config field {', '.join(unknown)}; "
                         f"it has {', '.join(sorted(fields))}")
    return dataclasses.replace(learned, **settings)


def selection_score(run: Path, per_family: int, steps: int, settings: dict | None = None
                    ) -> dict:
    """Benchmarks ``run``'s latest weights (config fields replaced by ``settings``) on the
    selection sample (both modes)."""
    enable_compilation_cache()
    tasks = sample_tasks("held_out", per_family, subset="selection")
    store = BaselineStore(num_steps=steps, fallback=BASELINES)
    theta, learned, _ = load(_weights(run))
    learned = configured(learned, settings or {})
    res = benchmark(tasks, learned, theta, num_steps=steps, store=store, progress=False)
    return {"selection_tasks": len(tasks), "selection_steps": steps,
            "selection_score": float(np.mean([m["summary"]["mean_normalised"]
                                              for m in res["modes"].values()])),
            **{f"selection_{k}": v["summary"] for k, v in res["modes"].items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--name", required=True)
    p.add_argument("--per-family", type=int, default=1)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--jobs", type=int, default=1,
                   help="candidates benchmarked at once, one process each (default 1)")
    p.add_argument("--no-select", action="store_true",
                   help="ship the single run without scoring it on the selection subset")
    p.add_argument("--set", type=parse_setting, action="append", default=[], dest="settings",
                   metavar="KEY=VALUE", help="replace a config field of every candidate")
    args = p.parse_args()
    settings = dict(args.settings)
    scores = {}
    if not args.no_select:
        # One process per candidate (up to --jobs at once): each run is mostly one core.
        jobs = [(run, args.per_family, args.steps, settings) for run in args.runs]
        if args.jobs > 1:
            ctx = multiprocessing.get_context("spawn")  # JAX's threads do not survive a fork
            with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
                results = list(pool.map(selection_score, *zip(*jobs)))
        else:
            results = [selection_score(*job) for job in jobs]
        for run, score in zip(args.runs, results):
            scores[run] = score
            print(run, score["selection_score"], flush=True)
    elif len(args.runs) != 1:
        raise SystemExit("--no-select ships exactly one run")
    best = min(args.runs, key=lambda r: scores[r]["selection_score"]) if scores else args.runs[0]
    theta, learned, card = load(_weights(best))
    learned = configured(learned, settings)
    prov = {**_provenance(best, card), **scores.get(best, {"selection_score": None}),
            "candidates": {str(r): s["selection_score"] for r, s in scores.items()},
            **({"settings": settings} if settings else {})}
    out = FOLDER / f"{args.name}.safetensors"
    save(out, theta, learned, provenance=prov)
    print(f"shipped {best} as {out}")


if __name__ == "__main__":
    main()

"""The ``lopt`` command line. ``lopt`` alone runs the main job on its defaults."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_STEPS = 1000
BENCHMARK_STEPS = 2000  # the meta-training horizon
BENCHMARK_PER_FAMILY = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


#: MetaTrainConfig fields that ``lopt meta-train`` takes as flags (``--outer-lr`` etc.).
META_TRAIN_FLAGS = {
    "optimizer": str, "estimator": str, "sigma": float, "truncation": _positive_int,
    "horizon": _positive_int, "outer_steps": _positive_int, "outer_lr": float,
    "pairs": _positive_int, "num_pools": _positive_int, "rotate_every": int, "seed": int,
    "normalise": str, "store": str, "warmup_steps": int, "init_weights": str,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lopt", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("tasks", help="list and filter the task set")
    p.add_argument("--family", action="append", help="only this family (repeatable)")
    p.add_argument("--group", choices=("meta_train", "held_out", "ood"))
    p.add_argument("--limit", type=_positive_int, help="show at most this many tasks")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")

    p = sub.add_parser("baselines", help="run tuned baselines on tasks, store and show them")
    p.add_argument("--task", action="append", help="task id (repeatable); default: a sample")
    p.add_argument("--family", action="append", help="sample only these families")
    p.add_argument("--group", default="held_out", choices=("meta_train", "held_out", "ood"))
    p.add_argument("--per-family", type=_positive_int, default=1,
                   help="tasks per family in the default sample")
    p.add_argument("--steps", type=_positive_int, default=DEFAULT_STEPS)
    p.add_argument("--store", type=Path, help="baseline store folder (default: $LOPT_STORE "
                   "or ~/.cache/lopt/baselines)")
    p.add_argument("--out", type=Path, default=Path("lopt-report"), help="report folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("meta-train", help="meta-train a learned optimizer (ES / PES)")
    p.add_argument("--config", type=Path, help="TOML config file (fields of MetaTrainConfig)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR")
    p.add_argument("--out", type=Path, default=Path("lopt_runs/run"), help="run folder")
    p.add_argument("--no-progress", action="store_true")
    for field, kind in META_TRAIN_FLAGS.items():
        p.add_argument(f"--{field.replace('_', '-')}", type=kind)
    p.add_argument("--family", action="append", help="meta-train family (repeatable)")
    p.add_argument("--fill-baselines", action="store_true",
                   help="run missing tuned-Adam baselines of the meta-train tasks first")

    p = sub.add_parser("benchmark", help="the shipped (or any) learned optimizer against tuned "
                       "Adam on held-out tasks; writes a report folder (the main job)")
    p.add_argument("--name", help="shipped optimizer (default: lopt.pretrained.DEFAULT)")
    p.add_argument("--weights", type=Path, help="any lopt weights file instead")
    p.add_argument("--full", action="store_true", help="every task of the group and subset")
    p.add_argument("--per-family", type=_positive_int, default=BENCHMARK_PER_FAMILY,
                   help="tasks per family when not --full")
    p.add_argument("--group", default="held_out", choices=("held_out", "ood"))
    p.add_argument("--subset", default="test", choices=("test", "selection", "all"),
                   help="part of the held-out tasks (test: reserved for reports)")
    p.add_argument("--family", action="append", help="only these families (repeatable)")
    p.add_argument("--steps", type=_positive_int, default=BENCHMARK_STEPS)
    p.add_argument("--mode", action="append", choices=("valid", "train_only"),
                   help="only this mode (repeatable; default both)")
    p.add_argument("--store", type=Path, help="baseline store folder (default: $LOPT_STORE "
                   "or ~/.cache/lopt/baselines, falling back to the shipped baselines)")
    p.add_argument("--out", type=Path, default=Path("lopt-report"), help="report folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("plot", help="draw a meta-training run's curves to PNG")
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path)
    return parser


COMMANDS = ("tasks", "baselines", "benchmark", "meta-train", "plot")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["benchmark", *argv]  # `lopt` alone (or with flags) runs the main job
    args = build_parser().parse_args(argv)
    command = args.command
    if command in ("meta-train", "benchmark", "baselines"):
        from lopt.compile_cache import enable_compilation_cache

        enable_compilation_cache()
    try:
        if command == "tasks":
            return _tasks(args)
        if command == "meta-train":
            return _meta_train(args)
        if command == "benchmark":
            return _benchmark(args)
        if command == "plot":
            from lopt.meta.plots import plot_run

            print(plot_run(args.run, args.out))
            return 0
        return _baselines(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"lopt: error: {e}", file=sys.stderr)
        return 2


def _meta_train(args) -> int:
    from lopt.meta.config import MetaTrainConfig
    from lopt.meta.trainer import meta_train, resume

    progress = not args.no_progress
    if args.resume:
        learner = resume(args.resume, outer_steps=args.outer_steps, progress=progress)
        out = args.resume
    else:
        overrides = {k: getattr(args, k) for k in META_TRAIN_FLAGS
                     if getattr(args, k) is not None}
        if args.family:
            overrides["families"] = args.family
        if args.fill_baselines:
            overrides["fill_baselines"] = True
        config = (MetaTrainConfig.from_file(args.config, **overrides) if args.config
                  else MetaTrainConfig.from_dict(overrides))
        learner = meta_train(config, args.out, progress=progress)
        out = args.out
    print(f"meta-trained {learner.version} outer steps; weights: {out}/theta.safetensors, "
          f"metrics: {out}/metrics.jsonl (plot: lopt plot {out})")
    return 0


def _benchmark(args) -> int:
    from rich.console import Console

    from lopt.evaluate import BaselineStore
    from lopt.evaluate.benchmark import MODES, benchmark
    from lopt.evaluate.report import write_report
    from lopt.pretrained import BASELINES, load_pretrained
    from lopt.tasks.taskset import sample_tasks, task_set

    theta, learned, card = load_pretrained(args.name, weights=args.weights)
    subset = None if args.group != "held_out" or args.subset == "all" else args.subset
    if args.full:
        tasks = task_set(args.group, families=args.family, subset=subset)
    else:
        tasks = sample_tasks(args.group, args.per_family, families=args.family, subset=subset)
    store = BaselineStore(args.store, num_steps=args.steps, fallback=BASELINES)
    name = args.weights or args.name or learned.name
    console = Console()
    console.print(f"[bold]lopt benchmark[/]: {name} on {len(tasks)} {args.group} tasks "
                  f"({subset or 'all'}) x {args.steps} steps")
    results = benchmark(tasks, learned, theta, num_steps=args.steps, store=store, seed=args.seed,
                        modes=args.mode or tuple(MODES), progress=not args.no_progress)
    results["optimizer"] = {"name": str(name), "card": card}
    results["tasks"] = {"group": args.group, "subset": subset or "all", "full": args.full}
    title = f"lopt benchmark: {name}, {args.group} ({subset or 'all'}), {args.steps} steps"
    out = write_report(results, args.out, title=title)
    console.print(_summary_table(results, title))
    console.print(f"report: {out}/summary.md, results.json, differences.png, wins.png, curves.png")
    return 0


def _summary_table(results, title):
    from rich.table import Table

    from lopt.evaluate.intervals import task_intervals
    from lopt.evaluate.report import MODE_LABELS, interval_text, speedup_text

    modes = list(results["modes"])
    table = Table(title=f"{title}\n(normalised loss: 0 = best baseline, 1 = initial)")
    table.add_column("")
    for mode in modes:
        table.add_column(MODE_LABELS[mode], justify="right")
    rows = (("tasks", "tasks", "{:d}"), ("lopt normalised loss", "mean_normalised", "{:.3f}"),
            ("Adam tuned per task", "adam_tuned_mean_normalised", "{:.3f}"),
            ("Adam best global lr", "adam_global_mean_normalised", "{:.3f}"),
            ("wins vs tuned Adam", "win_fraction_tuned", "{:.0%}"),
            ("wins vs global Adam", "win_fraction_global", "{:.0%}"),
            ("median speed-up vs tuned", "median_speedup", speedup_text),
            ("diverged", "diverged_fraction", "{:.0%}"))
    for label, key, fmt in rows:
        show = fmt if callable(fmt) else fmt.format
        table.add_row(label, *(show(results["modes"][m]["summary"][key]) for m in modes))
    # how sure: 95% intervals over the sampled tasks (as in summary.md)
    intervals = {m: task_intervals(results["modes"][m]["tasks"]) for m in modes}
    for label, key, fmt in (("lopt - tuned Adam, 95%", "difference_tuned", "{:+.4f}"),
                            ("wins vs tuned Adam, 95%", "wins_tuned", "{:.0%}")):
        table.add_row(label, *(interval_text(intervals[m][key], fmt) or "n/a" for m in modes))
    return table


def _tasks(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from lopt.tasks.taskset import task_set

    tasks = task_set(args.group, families=args.family)[: args.limit]
    if args.json:
        for t in tasks:
            print(json.dumps({"id": t.id, "family": t.family, "group": t.group,
                              "config": t.config}))
        return 0
    table = Table(title=f"{len(tasks)} tasks")
    for col in ("id", "group", "config"):
        table.add_column(col)
    for t in tasks:
        table.add_row(t.id, t.group, json.dumps(t.config))
    Console().print(table)
    return 0


def _baselines(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from lopt.evaluate import BaselineStore, fill_store, global_learning_rate, normalise
    from lopt.evaluate.plots import plot_curves_grid
    from lopt.atomic import atomic_write_text
    from lopt.evaluate.store import best_loss, initial_loss
    from lopt.tasks.taskset import get_task, sample_tasks

    if args.task:
        tasks = [get_task(t) for t in args.task]
    else:
        tasks = sample_tasks(args.group, args.per_family, families=args.family)
    store = BaselineStore(args.store, num_steps=args.steps)
    console = Console()
    console.print(f"[bold]lopt baselines[/]: {len(tasks)} tasks x {args.steps} steps, "
                  f"store {store.folder}")
    records = fill_store(tasks, store, seed=args.seed, progress=not args.no_progress)

    glr, gscores = global_learning_rate(records)
    table = Table(title=f"Baselines, {args.steps} steps (normalised mean train loss: 0 = best "
                        "baseline, 1 = initial)")
    for col in ("task", "initial", "best", "adam lr", "adam_tuned", "sgdm_tuned", "nadamw_list",
                f"adam@{glr:.2g}"):
        table.add_column(col, justify="right" if col != "task" else "left")
    rows = []
    for record, g in zip(records, gscores):
        init, best = initial_loss(record), best_loss(record)
        b = record["baselines"]
        norm = {n: float(normalise(b[n]["mean_loss"], init, best)) for n in b}
        rows.append({"task_id": record["task_id"], "initial_loss": init, "best_loss": best,
                     "adam_lr": b["adam_tuned"]["hparams"]["learning_rate"],
                     "normalised_mean_loss": {**norm, "adam_global": float(g)}})
        table.add_row(record["task_id"], f"{init:.3g}", f"{best:.3g}",
                      f"{rows[-1]['adam_lr']:.2g}",
                      *(f"{norm[n]:.3f}" for n in ("adam_tuned", "sgdm_tuned", "nadamw_list")),
                      f"{g:.3f}")
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    png = plot_curves_grid(records, args.out / "baselines.png",
                           title=f"Baseline training curves ({args.steps} steps)")
    atomic_write_text(args.out / "baselines.json", json.dumps(
        {"num_steps": args.steps, "global_adam_lr": glr, "tasks": rows}, indent=1))
    console.print(f"wrote {png} and {args.out / 'baselines.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Meta-training throughput: inner steps per second of the ES/PES engine versus a naive loop.

Setting of the issue: 16 tasks of an 8x8-input (digits) MLP with 32 hidden units, batch 128,
truncations of 50 steps, PES. The engine vmaps all particles of the pool and runs each
truncation as one compiled scan, and runs its pools concurrently, one thread per core (the
particles are split over one pool per core); the naive loop runs one task at a time with a
jitted inner step called from Python. Compile time is measured separately (first call minus a
warm call).

Run: python benchmarks/bench_meta.py  (writes benchmarks/results/meta.{json,md})
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from lopt.meta import unroll as U
from lopt.meta.worker import UnrollConfig, Worker, build_pools
from lopt.optimizers import Hierarchical, PerParameterMLP
from lopt.tasks import get_family

RESULTS = Path(__file__).parent / "results"


def digits_tasks(n):
    fam = get_family("mlp")
    return [fam.task({"dataset": "digits", "hidden": [32], "activation": "relu",
                      "batch_size": 128, "train_fraction": 1.0, "init_kind": i % 3,
                      "init_scale": round(0.5 + 0.1 * i, 2)}) for i in range(n)]


def engine(learned, tasks, pairs, pools, threads):
    """A worker whose ``pairs`` antithetic pairs are split over ``pools`` pools of all tasks
    (pools run concurrently on ``threads`` threads), and its compile time."""
    norms = {t.id: (2.5, 0.0) for t in tasks}
    worker = Worker(learned, build_pools(tasks, norms, pairs // pools) * pools,
                    UnrollConfig(estimator="pes", truncation=50, horizon=2000, min_length=100),
                    threads=threads)
    theta = learned.init(jax.random.key(0))
    t0 = time.perf_counter()
    worker.estimate(theta, 0)
    first = time.perf_counter() - t0
    warm = worker.estimate(theta, 0).metrics["worker_seconds"]
    return worker, theta, max(0.0, first - warm)


def engine_rates(learned, tasks, settings, repeats):
    """Inner steps per second of each ``(pairs, pools, threads)`` setting: medians of
    interleaved repeats, so that a noisy neighbour slows every setting alike."""
    built = [engine(learned, tasks, *s) for s in settings]
    times = [[] for _ in settings]
    for _ in range(repeats):
        for (worker, theta, _), ts in zip(built, times):
            ts.append(worker.estimate(theta, 0).metrics)
    rows = []
    for (pairs, pools, threads), (worker, _, compile_s), ts in zip(settings, built, times):
        inner = ts[0]["inner_steps"]
        warm = statistics.median(m["worker_seconds"] for m in ts)
        rows.append({"particles": 2 * pairs, "pools": pools, "threads": threads,
                     "inner_steps_per_outer": inner, "inner_steps_per_s": inner / warm,
                     "outer_step_s": warm, "compile_s": compile_s})
    return rows


def compile_options_ab(learned, tasks, repeats=2):
    """Compile and run seconds of one pool's estimate program (16 particles) with XLA's
    default options and with lopt's ``COMPILER_OPTIONS``, alternating."""
    from lopt.compile_cache import COMPILER_OPTIONS
    from lopt.meta.worker import _estimate_program

    worker, theta, _ = engine(learned, tasks, 8, 1, 1)
    pool, state = worker.pools[0][0], worker.states[0]
    key = jax.random.key(0)
    out = {"default": {"compile_s": [], "run_s": []}, "lopt": {"compile_s": [], "run_s": []}}
    for _ in range(repeats):
        for name, options in (("default", None), ("lopt", COMPILER_OPTIONS)):
            fn = _estimate_program(learned, worker.config, options)
            t0 = time.perf_counter()
            compiled = fn.lower(theta, pool, state, key).compile()
            out[name]["compile_s"].append(time.perf_counter() - t0)
            jax.block_until_ready(compiled(theta, pool, state, key))
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(theta, pool, state, key))
            out[name]["run_s"].append(time.perf_counter() - t0)
    return {name: {k: statistics.median(v) for k, v in d.items()} for name, d in out.items()}


def naive_rate(learned, task, truncation, runs=4):
    """One particle at a time, Python loop over inner steps (a jitted single step)."""
    theta = learned.init(jax.random.key(0))
    opt = learned.optimizer(theta)
    spec, hp, data = task.spec, task.hparams, task.data
    from lopt.tasks.base import sample_split

    @jax.jit
    def step(params, state, key):
        kb, kl, ko = jax.random.split(key, 3)
        batch = sample_split(spec, hp, data, "train", kb)
        loss, g = jax.value_and_grad(lambda p: spec.loss(hp, p, batch, kl))(params)
        u, state = opt.update(g, state, params, value=loss)
        params = optax.apply_updates(params, u)
        meta = spec.loss(hp, params, sample_split(spec, hp, data, "outer_valid", ko), kl)
        return params, state, meta

    params = task.init(jax.random.key(0))
    state = opt.init(params)
    jax.block_until_ready(step(params, state, jax.random.key(0)))
    t0 = time.perf_counter()
    for r in range(runs):
        for t in range(truncation):
            params, state, meta = step(params, state, jax.random.key(t))
    jax.block_until_ready(meta)
    return {"inner_steps_per_s": runs * truncation / (time.perf_counter() - t0)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tasks = digits_tasks(16)
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                           "jax": jax.__version__},
               "setting": "digits MLP 64-32-10, batch 128, truncation 50, PES", "rows": []}
    results["compile_options"] = compile_options_ab(Hierarchical(), tasks)
    print(results["compile_options"])
    cores = len(os.sched_getaffinity(0))
    # One pool on one thread; then the particles split over one pool per core (how the
    # engine uses several cores: each pool's program keeps about one core busy).
    settings = [(8, 1, 1), (8, cores, cores), (16, cores, cores)]
    for name, learned in (("hierarchical", Hierarchical()), ("mlp", PerParameterMLP())):
        naive = naive_rate(learned, tasks[0], 50)
        for row in engine_rates(learned, tasks, settings, args.repeats):
            row = {"optimizer": name, **row,
                   "naive_inner_steps_per_s": naive["inner_steps_per_s"]}
            row["speedup_vs_naive"] = row["inner_steps_per_s"] / row["naive_inner_steps_per_s"]
            # share of a 30-minute run spent compiling (one compile per pool and truncation)
            row["compile_share_30min"] = row["compile_s"] / 1800
            results["rows"].append(row)
            print(row)
    write_report(results)


def write_report(results):
    """``meta.json`` and the Markdown table ``meta.md``."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "meta.json").write_text(json.dumps(results, indent=1))
    lines = ["# Meta-training throughput", "", f"Machine: {results['machine']}", "",
             f"Setting: {results['setting']}; 16 tasks in the pool.", "",
             "Targets (hierarchical, 16 particles, 2 cores): at least 4,000 inner steps/s and "
             "10x the naive loop; compile under 20% of a 30-minute run. Inner steps/s are "
             "medians of interleaved repeats (wall time; a shared machine's noise moves them "
             "by about 30% between runs).", "",
             *([] if "compile_options" not in results else [
                 "Compile options (hierarchical, one pool's estimate program, medians of "
                 "alternating compiles): " + ", ".join(
                     f"{name}: compile {d['compile_s']:.1f} s, run {d['run_s']:.3f} s"
                     for name, d in results["compile_options"].items()) + ".", ""]),
             "| optimizer | particles | pools | threads | inner steps/s | naive inner steps/s | "
             "speed-up | outer step s | compile s | compile share of 30 min |",
             "|---|---|---|---|---|---|---|---|---|---|",
             *(f"| {r['optimizer']} | {r['particles']} | {r['pools']} | {r['threads']} | "
               f"{r['inner_steps_per_s']:.0f} | "
               f"{r['naive_inner_steps_per_s']:.0f} | {r['speedup_vs_naive']:.1f}x | "
               f"{r['outer_step_s']:.3f} | {r['compile_s']:.1f} | "
               f"{100 * r['compile_share_30min']:.1f}% |" for r in results["rows"])]
    (RESULTS / "meta.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

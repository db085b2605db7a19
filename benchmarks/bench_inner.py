"""Inner-training speed: lopt.train versus a hand-written scan, per-family step times and compile
times, and the vmapped learning-rate sweep versus 14 sequential runs.

Run: python benchmarks/bench_inner.py  (writes benchmarks/results/inner.{json,md})
The per-family numbers are measured pinned to one core; the rest on all cores.
Timings are medians of repeated runs measured side by side in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import lopt  # noqa: E402
from lopt.evaluate.baselines import ADAM_LEARNING_RATES, adam  # noqa: E402
from lopt.tasks import family_names, get_family  # noqa: E402
from lopt.tasks.base import sample_split  # noqa: E402
from lopt.tasks.taskset import task_set  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def _time(fn, repeats):
    """Median wall time of ``fn()`` (blocked until ready) over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def hand_written(task, lr, num_steps):
    """The reference: a bare ``lax.scan`` of Adam steps on the same model and sampling."""
    spec, hp, data = task.spec, task.hparams, task.data
    opt = optax.adam(lr)

    @jax.jit
    def run(key):
        params = spec.init(hp, key)
        state = opt.init(params)

        def step(carry, t):
            params, state = carry
            k_batch, k_loss = jax.random.split(jax.random.fold_in(key, t))
            batch = sample_split(spec, hp, data, "train", k_batch)
            loss, grads = jax.value_and_grad(lambda p: spec.loss(hp, p, batch, k_loss))(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        return jax.lax.scan(step, (params, state), jnp.arange(num_steps))[1]

    return run


def bench_overhead(num_steps=2000, repeats=7):
    config = {"dataset": "digits", "hidden": [256, 32], "activation": "relu", "batch_size": 128,
              "train_fraction": 1.0, "init_kind": 0, "init_scale": 1.0}
    task = get_family("mlp").task(config)
    opt = optax.adam(1e-3)
    ref = hand_written(task, 1e-3, num_steps)
    key = jax.random.key(0)
    fns = {
        "hand_written_scan": lambda: ref(key),
        "lopt_train_min_eval": lambda: lopt.train(task, opt, num_steps, key,
                                                  eval_every=num_steps).train_loss,
        "lopt_train_default_eval": lambda: lopt.train(task, opt, num_steps, key).train_loss,
    }
    for fn in fns.values():
        jax.block_until_ready(fn())  # compile
    # interleave repeats so machine noise hits every variant alike
    samples = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            samples[k].append(_time(fn, 1))
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "task": task.id, "num_params": task.num_params(), "num_steps": num_steps,
        "median_seconds": med,
        "ratio_min_eval": med["lopt_train_min_eval"] / med["hand_written_scan"],
        "ratio_default_eval": med["lopt_train_default_eval"] / med["hand_written_scan"],
    }


def bench_families(per_family=3, num_steps=300, repeats=3):
    """Per-family step and compile times, pinned to one core."""
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        return _families(per_family, num_steps, repeats)
    finally:
        os.sched_setaffinity(0, cores)


def _families(per_family, num_steps, repeats):
    rows = {}
    for name in family_names():
        tasks = task_set(families=[name])[:per_family]
        step_ms, compile_s = [], []
        for task in tasks:
            opt = optax.adam(1e-3)
            key = jax.random.key(0)
            fn = lambda: lopt.train(task, opt, num_steps, key, eval_every=num_steps).train_loss  # noqa: E731
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            first = time.perf_counter() - t0
            run = _time(fn, repeats)
            step_ms.append(1e3 * run / num_steps)
            compile_s.append(max(0.0, first - run))
        rows[name] = {"tasks": [t.id for t in tasks], "median_step_ms": statistics.median(step_ms),
                      "max_step_ms": max(step_ms), "median_compile_s": statistics.median(compile_s)}
        print(f"{name:16s} step {rows[name]['median_step_ms']:.3f} ms (max "
              f"{rows[name]['max_step_ms']:.3f}), compile {rows[name]['median_compile_s']:.1f} s")
    return rows


def bench_sweep(num_steps=1000, repeats=3):
    config = {"dataset": "digits", "hidden": [64], "activation": "relu", "batch_size": 128,
              "train_fraction": 1.0, "init_kind": 0, "init_scale": 1.0}
    task = get_family("mlp").task(config)
    lrs = jnp.asarray(ADAM_LEARNING_RATES, jnp.float32)
    key = jax.random.key(0)
    keys = jnp.stack([key] * len(lrs))

    def vmapped():
        return lopt.train_many(task, adam, num_steps, keys, opt_hparams={"learning_rate": lrs},
                               eval_every=num_steps // 10).train_loss

    def sequential():  # one compiled program reused 14 times (learning rate traced)
        return [lopt.train(task, adam, num_steps, key, opt_hparams={"learning_rate": lr},
                           eval_every=num_steps // 10).train_loss for lr in lrs]

    def sequential_fresh():  # what a plain loop does: a new optax.adam(lr) -> a new compile
        return [lopt.train(task, optax.adam(float(lr)), num_steps, key,
                           eval_every=num_steps // 10).train_loss for lr in lrs]

    t0 = time.perf_counter()
    jax.block_until_ready(vmapped())
    v_cold = time.perf_counter() - t0
    jax.block_until_ready(sequential())
    v, s = _time(vmapped, repeats), _time(sequential, repeats)
    fresh = _time(sequential_fresh, 1)
    return {"task": task.id, "num_steps": num_steps, "vmapped_s": v, "sequential_14_s": s,
            "speedup": s / v, "vmapped_with_compile_s": v_cold,
            "sequential_14_fresh_optimizers_s": fresh,
            "speedup_with_compile": fresh / v_cold}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args()
    q = args.quick
    results = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "affinity": len(os.sched_getaffinity(0)), "jax": jax.__version__},
        "overhead": bench_overhead(num_steps=500 if q else 2000, repeats=3 if q else 7),
        "sweep": bench_sweep(num_steps=300 if q else 1000),
        "families": bench_families(per_family=2 if q else 3),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "inner.json").write_text(json.dumps(results, indent=1))
    o, s = results["overhead"], results["sweep"]
    lines = [
        "# Inner-training benchmark", "",
        f"Machine: {results['machine']}", "",
        f"## lopt.train vs hand-written lax.scan ({o['task']}, {o['num_params']} params, "
        f"Adam, batch 128, {o['num_steps']} steps, medians)", "",
        "| variant | seconds | ratio to hand-written |", "|---|---|---|",
        *(f"| {k} | {v:.3f} | {v / o['median_seconds']['hand_written_scan']:.3f} |"
          for k, v in o["median_seconds"].items()), "",
        f"## Adam learning-rate sweep, 14 values, {s['num_steps']} steps", "",
        f"Warm (compiled): vmapped {s['vmapped_s']:.2f} s; 14 sequential runs of one compiled "
        f"program {s['sequential_14_s']:.2f} s; speed-up {s['speedup']:.2f}x.", "",
        f"Cold (compile included): vmapped {s['vmapped_with_compile_s']:.2f} s; 14 sequential "
        f"runs with fresh optax.adam(lr) objects {s['sequential_14_fresh_optimizers_s']:.2f} s; "
        f"speed-up {s['speedup_with_compile']:.2f}x.", "",
        "## Per family (first tasks of the task set, Adam, one core)", "",
        "| family | median step ms | max step ms | median compile s |", "|---|---|---|---|",
        *(f"| {k} | {v['median_step_ms']:.3f} | {v['max_step_ms']:.3f} | "
          f"{v['median_compile_s']:.1f} |" for k, v in results["families"].items()),
    ]
    (RESULTS / "inner.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Learned-optimizer step cost: whole training steps versus Adam, state bytes, and the achieved
FLOP/s of the per-element network as a fraction of a large float32 matmul.

Run: python benchmarks/bench_optimizers.py  (writes benchmarks/results/optimizers.{json,md})
All timings are medians of interleaved repeats measured in one process.
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
import numpy as np
import optax

from lopt.optimizers import Hierarchical, LearnedAdam, PerParameterMLP
from lopt.optimizers import features as F
from lopt.optimizers import per_element
from lopt.optimizers.nets import per_element_mlp

RESULTS = Path(__file__).parent / "results"
MODELS = {"25k": (64, 256, 32, 10), "1M": (784, 1024, 256, 10)}


def _median_time(fn, repeats, inner=5):
    times = []
    for _ in range(repeats):
        jax.block_until_ready(fn())
        t0 = time.perf_counter()
        for _ in range(inner):
            out = fn()
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def mlp_problem(sizes, batch):
    keys = jax.random.split(jax.random.key(0), len(sizes))
    params = [{"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)}
              for k, a, b in zip(keys, sizes[:-1], sizes[1:])]
    x = jax.random.normal(keys[-1], (batch, sizes[0]))
    y = jax.random.randint(keys[-1], (batch,), 0, sizes[-1])

    def loss(params):
        h = x
        for i, layer in enumerate(params):
            h = h @ layer["w"] + layer["b"]
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        return optax.softmax_cross_entropy_with_integer_labels(h, y).mean()

    return params, loss


def make_step(opt, loss):
    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params, value=value)
        return optax.apply_updates(params, updates), state

    return step


def bench_steps(repeats):
    optimizers = {
        "adam": lambda: optax.adam(1e-3),
        "learned_adam": lambda: LearnedAdam().optimizer(LearnedAdam().init()),
        "mlp": lambda: PerParameterMLP().optimizer(PerParameterMLP().init(jax.random.key(0))),
        "hierarchical": lambda: Hierarchical().optimizer(Hierarchical().init(jax.random.key(0))),
    }
    rows = []
    for model, sizes in MODELS.items():
        for batch in (128, 1024):
            params, loss = mlp_problem(sizes, batch)
            n = sum(p.size for p in jax.tree_util.tree_leaves(params))
            fns, states = {}, {}
            for name, make in optimizers.items():
                opt = make()
                state = opt.init(params)
                step = make_step(opt, loss)
                jax.block_until_ready(step(params, state))
                fns[name] = (lambda s=step, st=state: s(params, st))
                states[name] = sum(x.size * x.dtype.itemsize
                                   for x in jax.tree_util.tree_leaves(state)) / n
            samples = {k: [] for k in fns}
            for _ in range(repeats):
                for k, fn in fns.items():
                    samples[k].append(_median_time(fn, 1))
            med = {k: statistics.median(v) for k, v in samples.items()}
            for name in optimizers:
                rows.append({"model": model, "params": n, "batch": batch, "optimizer": name,
                             "step_ms": 1e3 * med[name], "ratio_to_adam": med[name] / med["adam"],
                             "state_bytes_per_param": states[name]})
                print(rows[-1])
    return rows


def matmul_rate(n=2048, repeats=5):
    a = jax.random.normal(jax.random.key(0), (n, n))
    b = jax.random.normal(jax.random.key(1), (n, n))
    f = jax.jit(lambda a, b: a @ b)
    t = _median_time(lambda: f(a, b), repeats, inner=3)
    return 2 * n**3 / t


def per_element_rate(num_elements=1_000_000, repeats=5):
    """FLOP/s of the hierarchical optimizer's per-element network on one 1M-element tensor.

    ``network``: the three matrix products alone, run ``CHUNK`` rows at a time as the optimizer
    runs them. ``with_features``: the whole per-element pipeline (channel scales, features,
    network, step); only the network's FLOPs are counted, so this is a lower bound.
    """
    arch = Hierarchical()
    theta = arch.init(jax.random.key(0))
    chunk = per_element.CHUNK
    x = jax.random.normal(jax.random.key(1), (num_elements // chunk, F.NUM_ELEMENT_FEATURES,
                                               chunk))
    bias = jnp.zeros((arch.ffn_hidden[0],))
    network = jax.jit(lambda th, x: jax.lax.map(
        lambda b: per_element_mlp(th["ffn"], b, bias, columns=True)[0], x))
    raw = jax.random.normal(jax.random.key(2), (per_element.NUM_RAW, num_elements))
    raw = raw.at[7:].set(jnp.abs(raw[7:]))  # second moments are positive
    pipeline = jax.jit(lambda th, r: per_element.per_element_outputs(
        th["ffn"], th["skip"], [r], bias[None], exp_mult=1e-3, step_mult=1e-3)[0][0])
    sizes = (F.NUM_ELEMENT_FEATURES, *arch.ffn_hidden, 2)
    flops_per_element = 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    t_net = _median_time(lambda: network(theta, x), repeats, inner=3)
    t_all = _median_time(lambda: pipeline(theta, raw), repeats, inner=3)
    return {"network": flops_per_element * x.shape[0] * chunk / t_net,
            "with_features": flops_per_element * num_elements / t_all,
            "flops_per_element": flops_per_element}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only-network", action="store_true", help="skip the step timings")
    args = parser.parse_args()
    peak = matmul_rate()
    rates = per_element_rate()
    results = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")},
        "matmul_gflops": peak / 1e9,
        "per_element_gflops": rates["network"] / 1e9,
        "per_element_fraction_of_matmul": rates["network"] / peak,
        "per_element_with_features_fraction": rates["with_features"] / peak,
        "per_element_flops_per_element": rates["flops_per_element"],
        "steps": [] if args.only_network else bench_steps(args.repeats),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "optimizers.json").write_text(json.dumps(results, indent=1))
    lines = [
        "# Learned-optimizer step cost", "", f"Machine: {results['machine']}", "",
        f"Large float32 matmul (2048^2): {results['matmul_gflops']:.1f} GFLOP/s. Per-element "
        f"network over 1M elements: {results['per_element_gflops']:.1f} GFLOP/s = "
        f"**{100 * results['per_element_fraction_of_matmul']:.0f}%** of the matmul rate "
        f"({results['per_element_flops_per_element']:.0f} FLOP per element).", "",
        "Whole training step (forward, backward, update), medians:", "",
        "| model | params | batch | optimizer | step ms | x Adam | state bytes/param |",
        "|---|---|---|---|---|---|---|",
        *(f"| {r['model']} | {r['params']} | {r['batch']} | {r['optimizer']} | "
          f"{r['step_ms']:.3f} | {r['ratio_to_adam']:.2f} | {r['state_bytes_per_param']:.1f} |"
          for r in results["steps"]),
    ]
    (RESULTS / "optimizers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

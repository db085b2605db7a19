"""lopt.torch step cost: whole PyTorch training steps (forward, backward, update) with each
learned optimizer versus torch.optim.AdamW and versus the JAX implementation on the same MLPs,
and the hierarchical optimizer against the time its per-element network's FLOPs need at this
machine's large-matmul rate.

Run: taskset -c 1 python benchmarks/bench_torch.py  (writes benchmarks/results/torch.{json,md})
One thread (torch.set_num_threads(1)); timings are medians of interleaved repeats, one process.
Each step's process CPU time is recorded beside its wall time: on a core shared with other jobs
CPU time is what the step would take alone, and the ratios use it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import optax
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from bench_optimizers import MODELS, make_step, matmul_rate, mlp_problem  # noqa: E402

import lopt  # noqa: E402
from lopt import pretrained  # noqa: E402
from lopt.optimizers import Hierarchical, LearnedAdam, PerParameterMLP  # noqa: E402
from lopt.torch import LearnedOptimizer  # noqa: E402

RESULTS = Path(__file__).parent / "results"
BATCH = 128
#: Multiply-adds of the per-element network (23 -> 32 -> 32 -> 2), times two.
FLOPS_PER_ELEMENT = 2 * (23 * 32 + 32 * 32 + 32 * 2)


def weights(folder: Path) -> dict:
    """``{architecture: (theta, learned optimizer, path)}``: the shipped hierarchical weights
    (if present) and initial weights of the other two."""
    out = {}
    if pretrained.DEFAULT in pretrained.available():
        theta, arch, _ = pretrained.load_pretrained()
        out[arch.name] = (theta, arch, pretrained.weights_path())
    for arch in (Hierarchical(), PerParameterMLP(), LearnedAdam()):
        if arch.name not in out:
            theta = arch.init(jax.random.key(0))
            lopt.save(folder / f"{arch.name}.safetensors", theta, arch)
            out[arch.name] = (theta, arch, folder / f"{arch.name}.safetensors")
    return out


def torch_mlp(sizes):
    torch.manual_seed(0)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    x, y = torch.randn(BATCH, sizes[0]), torch.randint(0, sizes[-1], (BATCH,))
    return model, x, y


def torch_step(sizes, make_opt):
    """A closure running one training step of a fresh model with optimizer ``make_opt``."""
    model, x, y = torch_mlp(sizes)
    opt = make_opt(model.parameters())
    learned = isinstance(opt, LearnedOptimizer)

    def step():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step(loss=loss) if learned else opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def jax_step(sizes, opt):
    params, loss = mlp_problem(sizes, BATCH)
    step, state = make_step(opt, loss), opt.init(params)
    carry = [params, state]

    def run():
        carry[:] = step(*carry)
        return carry[0]

    jax.block_until_ready(run())  # compile
    return lambda: jax.block_until_ready(run())


def torch_matmul_rate(n=2048, repeats=7):
    """FLOP/s of a large float32 matmul (process CPU time, median)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        a @ b
        times.append(time.process_time() - t0)
    return 2 * n**3 / statistics.median(times)


def bench_model(name, sizes, ws, repeats, inner):
    fns = {("torch", "adamw"): torch_step(sizes, lambda p: torch.optim.AdamW(p, lr=1e-3))}
    for arch, (_, _, path) in ws.items():
        fns[("torch", arch)] = torch_step(sizes, lambda p, path=path: LearnedOptimizer(p, path))
    for arch, (theta, learned, _) in ws.items():
        fns[("jax", arch)] = jax_step(sizes, learned.optimizer(theta))
    fns[("jax", "adamw")] = jax_step(sizes, optax.adamw(1e-3))
    for fn in fns.values():  # warm up: state allocation, first-step paths
        fn(), fn()
    cpu, wall = {k: [] for k in fns}, {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(inner):
                fn()
            cpu[k].append((time.process_time() - c0) / inner)
            wall[k].append((time.perf_counter() - t0) / inner)
    n = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    med = {k: statistics.median(v) for k, v in cpu.items()}
    return [{"model": name, "params": n, "impl": impl, "optimizer": opt,
             "step_ms": 1e3 * t, "wall_ms": 1e3 * statistics.median(wall[(impl, opt)]),
             "x_adamw": t / med[("torch", "adamw")],
             "x_jax_same": t / med[("jax", opt)] if impl == "torch" else None}
            for (impl, opt), t in med.items()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--inner", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    with tempfile.TemporaryDirectory() as folder:
        ws = weights(Path(folder))
        rows = [r for name, sizes in MODELS.items()
                for r in bench_model(name, sizes, ws, args.repeats, args.inner)]
    rate, jax_rate = torch_matmul_rate(), matmul_rate()
    for r in rows:
        flop_time = FLOPS_PER_ELEMENT * r["params"] / rate
        r["flop_bound_ms"] = 1e3 * flop_time
        r["x_flop_bound"] = r["step_ms"] / r["flop_bound_ms"]
    results = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "affinity": sorted(os.sched_getaffinity(0)), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "jax": jax.__version__},
        "torch_matmul_gflops": rate / 1e9, "jax_matmul_gflops": jax_rate / 1e9,
        "flops_per_element": FLOPS_PER_ELEMENT, "batch": BATCH,
        "weights": {k: str(v[2]) for k, v in ws.items()},
        "seconds": time.time() - started, "steps": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "torch.json").write_text(json.dumps(results, indent=1))
    (RESULTS / "torch.md").write_text(report(results))
    print(report(results))


def report(results) -> str:
    def fmt(v):
        return "" if v is None else f"{v:.2f}"

    m = results["machine"]
    return "\n".join([
        "# lopt.torch step cost", "",
        f"Machine: {m['platform']}, {m['cpus']} CPUs, run on CPU(s) {m['affinity']} "
        f"(taskset) with {m['torch_threads']} PyTorch thread; torch {m['torch']}, "
        f"jax {m['jax']}.", "",
        f"Large float32 matmul (2048^2): {results['torch_matmul_gflops']:.1f} GFLOP/s in "
        f"PyTorch, {results['jax_matmul_gflops']:.1f} in JAX. The per-element network costs "
        f"{results['flops_per_element']} FLOP per parameter and step; **FLOP-bound** is that "
        "at PyTorch's matmul rate.", "",
        f"Whole training step (forward, backward, update; MLPs, batch {results['batch']}), "
        "medians of interleaved repeats of process CPU time (wall time, which other jobs on "
        "the core inflate, beside it). x AdamW: against torch.optim.AdamW; x JAX: the PyTorch "
        "step against the JAX one of the same optimizer; x FLOP-bound: step time over the "
        "FLOP-bound time.", "",
        "| model | params | impl | optimizer | step ms | wall ms | x AdamW | x JAX "
        "| x FLOP-bound |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f"| {r['model']} | {r['params']} | {r['impl']} | {r['optimizer']} | "
          f"{r['step_ms']:.2f} | {r['wall_ms']:.2f} | {r['x_adamw']:.2f} | "
          f"{fmt(r['x_jax_same'])} | {r['x_flop_bound']:.2f} |" for r in results["steps"]),
        "", target(results),
        "", f"Weights: {results['weights']}. Run time {results['seconds']:.0f} s.", ""])


def target(results) -> str:
    """The issue's target: the hierarchical step on the 1M model within 1.5x FLOP-bound."""
    row = next(r for r in results["steps"] if r["model"] == "1M" and r["impl"] == "torch"
               and r["optimizer"] == "hierarchical")
    return (f"Target (hierarchical, 1M): within 1.5x the FLOP-bound time "
            f"({1.5 * row['flop_bound_ms']:.1f} ms here); measured {row['x_flop_bound']:.2f}x "
            f"({row['step_ms']:.1f} ms, {row['x_adamw']:.1f}x AdamW, "
            f"{1 / row['x_jax_same']:.2f}x faster than JAX): "
            f"{'met' if row['x_flop_bound'] <= 1.5 else 'not met'}.")


if __name__ == "__main__":
    main()

"""How large the learned optimizer's steps are, next to those of per-task tuned Adam.

On the held-out tasks where lopt trails tuned Adam most (1-D and 2-D convnets, whose tuned Adam
rates are 0.07 to 0.17) the question is whether it steps in the wrong direction or just too
little. This trains each task for ``--steps`` steps with a weights file (fed the training loss
alone) and with Adam at the task's stored tuned rate, and records the RMS of each step's update
over all parameters and the training loss.

Run: python benchmarks/bench_step_size.py [--weights W] [--task ID ...]
(writes benchmarks/results/step_size.{json,md,png})
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lopt
from lopt.evaluate.store import BaselineStore
from lopt.pretrained import BASELINES
from lopt.tasks.taskset import get_task

RESULTS = Path(__file__).parent / "results"
#: Test tasks where lopt trails tuned Adam most (convnets) and, for contrast, where it leads
#: (an autoencoder and a language model; ``benchmarks/results/lopt-full``).
TASKS = ("conv1d/8a26acbf3f", "conv1d/7dd4daee66", "conv2d/539a5dc72c",
         "autoencoder/30ae4648d5", "rnn_lm/9e23c36546")


def trace(task, opt, num_steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-step update RMS (over all parameters) and training loss of one run, compiled."""
    params = task.init(jax.random.key(seed))

    def step(carry, key):
        params, state = carry
        loss, grads = jax.value_and_grad(task.loss)(params, task.batch("train", key), key)
        updates, state = opt.update(grads, state, params, value=loss)
        leaves = jax.tree_util.tree_leaves(updates)
        rms = jnp.sqrt(sum(jnp.sum(u ** 2) for u in leaves) / sum(u.size for u in leaves))
        return (optax.apply_updates(params, updates), state), (rms, loss)

    keys = jax.random.split(jax.random.key(seed + 1), num_steps)
    _, (rms, loss) = jax.jit(lambda c: jax.lax.scan(step, c, keys))((params, opt.init(params)))
    return {"update_rms": np.asarray(rms), "train_loss": np.asarray(loss)}


def _median(x, a, b):
    return float(np.median(x[a:b]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="weights file (default: shipped)")
    parser.add_argument("--task", action="append", help="task id (repeatable)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS / "step_size")
    args = parser.parse_args(argv)
    if args.steps <= 500:
        parser.error("--steps must be above 500 (medians over steps 0-100, 100-500, 500-end)")
    windows = [(0, 100), (100, 500), (500, args.steps)]
    store = BaselineStore(None, num_steps=args.steps, fallback=BASELINES)
    learned = lopt.optimizer(weights=args.weights)  # None: the shipped default
    rows = []
    for task_id in args.task or TASKS:
        task = get_task(task_id)
        record = store.get(task)
        if record is None:
            raise SystemExit(f"no stored baselines for {task_id} at {args.steps} steps")
        lr = record["baselines"]["adam_tuned"]["hparams"]["learning_rate"]
        runs = {"lopt": trace(task, learned, args.steps),
                "adam": trace(task, optax.adam(lr), args.steps)}
        row = {"task_id": task_id, "adam_lr": lr, "curves": {}}
        for name, r in runs.items():
            row[name] = {"update_rms": [_median(r["update_rms"], a, b) for a, b in windows],
                         "final_loss": _median(r["train_loss"], args.steps - 50, args.steps)}
            row["curves"][name] = {k: v[::10].tolist() for k, v in r.items()}
        rows.append(row)
        print(task_id, {n: rows[-1][n] for n in runs})
    write(rows, args.out, windows)


def write(rows, out: Path, windows) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    spans = ", ".join(f"{a}-{b}" for a, b in windows)
    lines = ["# Step sizes: lopt against per-task tuned Adam", "",
             f"Median RMS of one step's update over all parameters, in steps {spans}; "
             "final training loss (median of the last 50 steps). "
             "`python benchmarks/bench_step_size.py`.", "",
             "| task | Adam lr | lopt update RMS | Adam update RMS | lopt / Adam | "
             "lopt final loss | Adam final loss |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, ad = r["lopt"]["update_rms"], r["adam"]["update_rms"]
        ratio = " / ".join(f"{a / b:.2f}" for a, b in zip(lo, ad))
        lines.append(f"| {r['task_id']} | {r['adam_lr']:.3g} | "
                     f"{' / '.join(f'{x:.1e}' for x in lo)} | "
                     f"{' / '.join(f'{x:.1e}' for x in ad)} | {ratio} | "
                     f"{r['lopt']['final_loss']:.3f} | {r['adam']['final_loss']:.3f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(2, len(rows), figsize=(3.2 * len(rows), 5.5), squeeze=False)
    for j, r in enumerate(rows):
        for name, style in (("lopt", "-"), ("adam", "--")):
            c = r["curves"][name]
            steps = np.arange(len(c["update_rms"])) * 10
            label = "lopt" if name == "lopt" else f"Adam {r['adam_lr']:.2g}"
            axes[0, j].semilogy(steps, c["update_rms"], style, label=label)
            axes[1, j].plot(steps, c["train_loss"], style, label=label)
        axes[0, j].set_title(r["task_id"], fontsize=8)
        axes[0, j].legend(fontsize=7)
        axes[1, j].set_xlabel("step")
    axes[0, 0].set_ylabel("update RMS")
    axes[1, 0].set_ylabel("training loss")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


if __name__ == "__main__":
    main()

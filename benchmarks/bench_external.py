"""Learned optimizers on models and data outside lopt's task set, through the public API only.

Five small flax models a user might bring (none of them is a lopt task family): an MLP and a
conv net on scikit-learn's digits, logistic regression on breast-cancer, a LayerNorm residual
MLP regressing scikit-learn's diabetes targets, and a one-layer transformer on a generated
majority-token sequence task. Each trains for ``--steps`` steps with every weights file given
(``lopt.optimizer(weights=...)``, fed the training loss alone, and the validation loss every
10 steps as well) and with Adam at four learning rates.

Run: python benchmarks/bench_external.py [--weights A.safetensors LABEL=B.safetensors ...]
    [--problem digits_convnet ...] [--seed 1]
(default: the shipped optimizer on all five problems, seed 0; a file's label is its stem unless
given; writes benchmarks/results/external.{json,md})
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

import lopt

RESULTS = Path(__file__).parent / "results"
ADAM_LRS = (3e-4, 1e-3, 3e-3, 1e-2)
BATCH = 128


def _split(x, y, seed=0):
    """Shuffled 70/15/15 train/valid/test split, features standardised on train."""
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    a, b = int(0.7 * len(x)), int(0.85 * len(x))
    mu, sd = x[:a].mean(0), x[:a].std(0) + 1e-6
    x = ((x - mu) / sd).astype(np.float32)
    return {k: (jnp.asarray(x[s]), jnp.asarray(y[s]))
            for k, s in (("train", slice(0, a)), ("valid", slice(a, b)), ("test", slice(b, None)))}


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(128)(x)))


class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = x.reshape(-1, 8, 8, 1)
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.relu(nn.Conv(32, (3, 3), strides=2)(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


class Logistic(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(x)


class ResidualMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(64)(x)
        for _ in range(3):
            h = h + nn.Dense(64)(nn.gelu(nn.LayerNorm()(h)))
        return nn.Dense(1)(nn.LayerNorm()(h))[:, 0]


class Transformer(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        h = nn.Embed(4, 32)(tokens) + self.param("pos", nn.initializers.normal(0.02),
                                                 (tokens.shape[1], 32))
        h = h + nn.SelfAttention(num_heads=4)(nn.LayerNorm()(h))
        h = h + nn.Dense(32)(nn.gelu(nn.Dense(64)(nn.LayerNorm()(h))))
        return nn.Dense(4)(nn.LayerNorm()(h).mean(1))


def _xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _mse(pred, y):
    return jnp.mean((pred - y) ** 2)


def problems() -> dict:
    """``{name: (model, data, loss)}``."""
    x, y = load_digits(return_X_y=True)
    digits = _split(x, y)
    x, y = load_breast_cancer(return_X_y=True)
    cancer = _split(x, y)
    x, y = load_diabetes(return_X_y=True)
    diabetes = _split(x, (y - y.mean()) / y.std())
    tokens = np.random.default_rng(0).integers(0, 4, (3000, 16))
    majority = np.argmax(np.stack([(tokens == k).sum(1) + 0.1 * k for k in range(4)], 1), 1)
    seq = {k: (jnp.asarray(tokens[s]), jnp.asarray(majority[s])) for k, s in
           (("train", slice(0, 2100)), ("valid", slice(2100, 2550)), ("test", slice(2550, None)))}
    return {"digits_mlp": (MLP(), digits, _xent), "digits_convnet": (ConvNet(), digits, _xent),
            "cancer_logistic": (Logistic(), cancer, _xent),
            "diabetes_residual_mlp": (ResidualMLP(), diabetes, _mse),
            "majority_transformer": (Transformer(), seq, _xent)}


def train(model, data, loss_fn, opt, steps: int, *, valid_every: int | None, seed: int = 0):
    """Trains ``model`` with ``opt``; returns per-step training losses and the final test loss."""
    xs, ys = data["train"]
    params = model.init(jax.random.key(seed), xs[:2])

    def loss(p, x, y):
        return loss_fn(model.apply(p, x), y)

    @jax.jit
    def run(params, key):
        def step(carry, t):
            params, state = carry
            idx = jax.random.randint(jax.random.fold_in(key, t), (BATCH,), 0, xs.shape[0])
            value, grads = jax.value_and_grad(loss)(params, xs[idx], ys[idx])
            extra = {}
            if valid_every is not None:
                # the full validation split every ``valid_every`` steps, NaN (none) otherwise
                extra["valid_loss"] = jnp.where(t % valid_every == 0, loss(params, *data["valid"]),
                                                jnp.nan)
            updates, state = opt.update(grads, state, params, value=value, **extra)
            return (optax.apply_updates(params, updates), state), value

        (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))
        return losses, loss(params, *data["test"])

    losses, test = run(params, jax.random.key(seed + 1))
    return np.asarray(losses), float(test)


def main() -> None:
    probs = problems()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", nargs="*", default=[],
                   help="weights files, optionally LABEL=FILE (default: the shipped one)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--out", type=Path, default=RESULTS / "external")
    p.add_argument("--problem", action="append", default=None, choices=sorted(probs),
                   help="only this problem (repeatable; default: all)")
    p.add_argument("--seed", type=int, default=0,
                   help="initialisation and minibatch seed (the same for every optimizer)")
    args = p.parse_args()
    learned = {label: lopt.optimizer(weights=w) for label, w in map(_labelled, args.weights)} \
        or {"shipped": lopt.optimizer()}
    rows, start = [], time.time()
    for name, (model, data, loss_fn) in probs.items():
        if args.problem and name not in args.problem:
            continue
        runs = {f"adam {lr:g}": (optax.adam(lr), None) for lr in ADAM_LRS}
        for label, opt in learned.items():
            runs[f"{label} (train loss)"] = (opt, None)
            runs[f"{label} (+valid)"] = (opt, 10)
        for label, (opt, every) in runs.items():
            losses, test = train(model, data, loss_fn, opt, args.steps, valid_every=every,
                                 seed=args.seed)
            finite = np.isfinite(losses).all() and np.isfinite(test)
            rows.append({"problem": name, "optimizer": label,
                         "mean_train_loss": float(np.mean(losses)) if finite else None,
                         "final_train_loss": float(np.mean(losses[-50:])) if finite else None,
                         "test_loss": test if finite else None})
            print(rows[-1], flush=True)
    _write(args.out, rows, args.steps, time.time() - start, args.weights, args.seed)


def _labelled(arg: str) -> tuple[str, str]:
    """``(label, file)`` of a ``--weights`` argument: ``LABEL=FILE`` or ``FILE`` (its stem)."""
    label, sep, path = arg.rpartition("=")
    return (label, path) if sep else (Path(path).stem, path)


def rewrite(path: Path) -> None:
    """Rewrites the Markdown of an earlier run from its JSON."""
    data = json.loads(path.with_suffix(".json").read_text())
    _write(path, data["rows"], data["steps"], data.get("seconds", 0.0), data["weights"],
           data.get("seed", 0))


def _write(out: Path, rows: list, steps: int, seconds: float, weights: list,
           seed: int = 0) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"steps": steps, "batch": BATCH, "seed": seed, "weights": weights, "seconds": seconds,
         "rows": rows}, indent=1))
    fmt = lambda v: "diverged" if v is None else f"{v:.4f}"  # noqa: E731
    lines = ["# Learned optimizers on models outside the task set", "",
             f"Public API only; {steps} steps, batch {BATCH}, one seed ({seed}). Mean train "
             "loss: the "
             "training loss averaged over the run (what the benchmark's normalised loss "
             "averages); final: the last 50 steps; test: the held-out split after training. "
             f"Weights: {weights or ['shipped']}. Run time {seconds:.0f} s.", "",
             "| problem | optimizer | mean train loss | final train loss | test loss |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['problem']} | {r['optimizer']} | {fmt(r['mean_train_loss'])} | "
              f"{fmt(r['final_train_loss'])} | {fmt(r['test_loss'])} |" for r in rows]
    problems = sorted({r["problem"] for r in rows})
    lines += ["", "Mean train loss over that of the best of the four Adam rates for each problem "
              "(below 1: the learned optimizer is better; the geometric mean last):", "",
              "| optimizer | " + " | ".join(problems) + " | geo. mean |",
              "|---|" + "---|" * (len(problems) + 1)]
    for label, ratios in _ratios_to_best_adam(rows).items():
        geo = np.exp(np.mean(np.log(list(ratios.values())))) if ratios else float("nan")
        lines.append(f"| {label} | " + " | ".join(f"{ratios[k]:.2f}" if k in ratios else "diverged"
                                                  for k in problems) + f" | {geo:.2f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def _ratios_to_best_adam(rows: list) -> dict:
    """``{learned optimizer: {problem: mean train loss / best Adam's}}`` (diverged left out)."""
    best = {}
    for r in rows:
        if r["optimizer"].startswith("adam ") and r["mean_train_loss"] is not None:
            best[r["problem"]] = min(best.get(r["problem"], np.inf), r["mean_train_loss"])
    out: dict = {}
    for r in rows:
        if not r["optimizer"].startswith("adam "):
            out.setdefault(r["optimizer"], {})
            if r["mean_train_loss"] is not None:
                out[r["optimizer"]][r["problem"]] = r["mean_train_loss"] / best[r["problem"]]
    return out


if __name__ == "__main__":
    main()

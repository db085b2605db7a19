"""Linear (MSE) and logistic (binary cross-entropy) regression on synthetic data with a
controlled condition number.

Features are ``x = z diag(s) R``: ``z`` is whitened Gaussian noise (per split, so each split's
feature covariance ``X^T X / n`` is exactly ``R^T diag(s^2) R``), ``s^2`` are log-spaced with
max/min equal to the sampled condition number and mean 1, and ``R`` is a random rotation or the
identity. Targets come from a random teacher whose signal has unit variance, plus label noise.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.tasks import data
from lopt.tasks.base import TaskFamily, TaskParts, TaskSpec, choice, log_uniform, round_sig
from lopt.tasks.families.quadratic import log_spectrum, random_rotation, single_threaded_blas

KINDS = ("linear", "logistic")
DIMS = (16, 64, 256)
COND_RANGE = (1.0, 1e4)
NOISE_RANGE = (0.0, 0.3)
INIT_SCALE_RANGE = (0.1, 1.0)
BATCH = (32, 128)


def num_examples(dim: int) -> int:
    """Examples per data set: enough that every split has at least ``dim`` rows (whitening)."""
    return max(1024, 16 * dim)


def _whiten(z: np.ndarray) -> np.ndarray:
    """Rescaled orthonormal columns: ``z^T z / n`` becomes exactly the identity."""
    q, r = np.linalg.qr(z)
    return q * np.sign(np.diag(r)) * math.sqrt(len(z))


def make_data(kind: str, dim: int, condition_number: float, label_noise: float, rotated: bool,
              seed: int) -> dict:
    """Four splits of ``{"x": [n, dim], "y": [n]}`` (float32; ``y`` in {0, 1} for logistic).

    Linear targets are ``teacher(x) + label_noise * N(0, 1)``; logistic labels are
    ``teacher(x) > 0`` with a fraction ``label_noise`` of them flipped.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown regression kind {kind!r}; allowed: {', '.join(KINDS)}")
    with single_threaded_blas():
        return _make_data(kind, dim, condition_number, label_noise, rotated, seed)


def _make_data(kind, dim, condition_number, label_noise, rotated, seed):
    rng = np.random.default_rng(seed)
    n = num_examples(dim)
    s2 = log_spectrum(math.log(condition_number), dim)
    rotation = random_rotation(rng, dim) if rotated else np.eye(dim)
    teacher = rng.standard_normal(dim)
    teacher /= math.sqrt(np.sum(s2 * teacher ** 2))  # unit signal variance
    raw = {"z": rng.standard_normal((n, dim)), "noise": rng.standard_normal(n),
           "flip": rng.uniform(size=n)}
    out = {}
    for split, arrays in data.split_arrays(raw, seed=seed).items():
        z = _whiten(arrays["z"]) * np.sqrt(s2)
        signal = z @ teacher
        if kind == "linear":
            y = signal + label_noise * arrays["noise"]
        else:
            y = (signal > 0) != (arrays["flip"] < label_noise)
        out[split] = {"x": (z @ rotation).astype(np.float32), "y": y.astype(np.float32)}
    return out


@dataclasses.dataclass(frozen=True)
class RegressionSpec(TaskSpec):
    """A linear model ``x @ w + b`` on ``dim`` features, with MSE or logistic loss."""

    dim: int
    kind: str  # one of KINDS
    batch_size: int

    def init(self, hp, key):
        w = jax.random.normal(key, (self.dim,)) * (hp["init_scale"] / math.sqrt(self.dim))
        return {"w": w, "b": jnp.zeros(())}

    def loss(self, hp, params, batch, key):
        pred = batch["x"] @ params["w"] + params["b"]
        if self.kind == "linear":
            return 0.5 * jnp.mean((pred - batch["y"]) ** 2)
        return optax.sigmoid_binary_cross_entropy(pred, batch["y"]).mean()


class Regression(TaskFamily):
    name = "regression"
    description = "Linear and logistic regression on synthetic data of controlled conditioning."
    space = {
        "kind": KINDS,
        "dim": DIMS,
        "condition_number": f"log-uniform {list(COND_RANGE)} (of the feature covariance)",
        "rotated": (True, False),
        "label_noise": f"uniform {list(NOISE_RANGE)}: target noise std (linear, signal std 1) "
                       "or fraction of flipped labels (logistic)",
        "batch_size": BATCH,
        "init_scale": f"log-uniform {list(INIT_SCALE_RANGE)} (std of the initial predictions)",
        "seed": "integer [0, 2^31): features, teacher and noise",
    }

    def sample_config(self, rng):
        return {
            "kind": choice(rng, KINDS),
            "dim": choice(rng, DIMS),
            "condition_number": round_sig(log_uniform(rng, *COND_RANGE), 4),
            "rotated": bool(rng.uniform() < 0.5),
            "label_noise": round_sig(float(rng.uniform(*NOISE_RANGE)), 3),
            "batch_size": choice(rng, BATCH),
            "init_scale": round_sig(log_uniform(rng, *INIT_SCALE_RANGE), 3),
            "seed": int(rng.integers(2 ** 31)),
        }

    def build(self, config):
        spec = RegressionSpec(int(config["dim"]), config["kind"], int(config["batch_size"]))
        splits = make_data(spec.kind, spec.dim, float(config["condition_number"]),
                           float(config["label_noise"]), bool(config["rotated"]),
                           int(config["seed"]))
        # Device arrays: per-task data is never shared, so it bypasses base's device cache.
        splits = jax.tree_util.tree_map(jnp.asarray, splits)
        return TaskParts(spec, {"init_scale": config["init_scale"]}, splits)

"""Quadratic bowls ``0.5 (w - w*)^T A (w - w*)`` with a controlled condition number.

``A = R diag(lambda) R^T``: the eigenvalues are log-spaced between ``1`` and ``1 / kappa``
(then normalised to mean ``curvature``), so the condition number ``kappa`` is exact, and ``R``
is a random rotation (or the identity, for axis-aligned bowls). The dimension is static; the
condition number, curvature, rotation, optimum and gradient-noise scale are traced, so bowls of
one dimension share a compiled program. Optional Gaussian gradient noise comes from the loss key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from lopt.tasks.base import SPLITS, TaskFamily, TaskParts, TaskSpec, choice, log_uniform, round_sig

DIMS = (16, 64, 256)
COND_RANGE = (1.0, 1e4)
CURVATURE_RANGE = (0.3, 3.0)
INIT_SCALE_RANGE = (0.1, 1.0)
#: Probability that a bowl has no gradient noise; otherwise the noise scale (relative to the
#: expected gradient norm at initialisation) is drawn log-uniformly from ``NOISE_RANGE``.
P_NOISELESS = 0.5
NOISE_RANGE = (0.01, 1.0)
#: Per-coordinate standard deviation of the optimum, and of the initial point at init_scale 1,
#: is ``RADIUS / sqrt(dim)``: the expected initial loss is ``2 curvature (1 + init_scale^2)``.
RADIUS = 2.0


# ---------------------------------------------------------------------------------------------
# Helpers shared with the regression and test-function families.


def log_spectrum(log_cond, dim: int):
    """``dim`` eigenvalues log-spaced from ``1`` down to ``exp(-log_cond)``, scaled to mean 1.

    Works on traced ``log_cond`` (``jnp``) and on plain floats alike; max/min = ``exp(log_cond)``.
    """
    m = jnp if isinstance(log_cond, jax.Array) else np
    lam = m.exp(-log_cond * m.linspace(0.0, 1.0, dim))
    return lam / lam.mean()


def single_threaded_blas():
    """Single-threaded BLAS for the small factorisations of task building: multi-threaded
    OpenBLAS next to XLA's thread pool, or on a loaded machine, is many times slower."""
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def random_rotation(rng: np.random.Generator, dim: int) -> np.ndarray:
    """A Haar-random orthogonal matrix (QR of a Gaussian matrix with the sign fix)."""
    with single_threaded_blas():
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def gradient_noise(params, std, key):
    """A term that is exactly 0 but whose gradient is ``std * N(0, I)``: noisy gradients while
    the loss values (and so evaluation curves) stay exact."""
    eps = jax.random.normal(key, params.shape, params.dtype)
    dot = jnp.vdot(eps, params) * std
    return dot - jax.lax.stop_gradient(dot)


# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class QuadraticSpec(TaskSpec):
    """A ``dim``-dimensional bowl; parameters are ``{"w": [dim]}``, there is no data."""

    dim: int
    batch_size: int = 1  # no data: batches are empty

    def eigenvalues(self, hp):
        return hp["curvature"] * log_spectrum(hp["log_cond"], self.dim)

    def hessian(self, hp):
        """The matrix ``A`` (for inspection; the loss works in the eigenbasis)."""
        r = hp["rotation"]
        return (r * self.eigenvalues(hp)) @ r.T

    def init(self, hp, key):
        w = jax.random.normal(key, (self.dim,)) * (hp["init_scale"] * RADIUS / math.sqrt(self.dim))
        return {"w": w}

    def loss(self, hp, params, batch, key):
        w = params["w"]
        z = (w - hp["optimum"]) @ hp["rotation"]  # coordinates in A's eigenbasis
        value = 0.5 * jnp.sum(self.eigenvalues(hp) * z ** 2)
        return value + gradient_noise(w, hp["noise_std"], key)


class Quadratic(TaskFamily):
    name = "quadratic"
    description = "Quadratic bowls with log-spaced eigenvalues of a sampled condition number."
    space = {
        "dim": DIMS,
        "condition_number": f"log-uniform {list(COND_RANGE)}",
        "rotated": (True, False),
        "curvature": f"log-uniform {list(CURVATURE_RANGE)} (mean eigenvalue)",
        "init_scale": f"log-uniform {list(INIT_SCALE_RANGE)} (initial distance, x optimum's)",
        "noise_scale": f"0 with probability {P_NOISELESS}, else log-uniform {list(NOISE_RANGE)}; "
                       "gradient-noise norm relative to the expected initial gradient norm",
        "seed": "integer [0, 2^31): rotation and optimum",
    }

    def sample_config(self, rng):
        noise = 0.0 if rng.uniform() < P_NOISELESS else round_sig(log_uniform(rng, *NOISE_RANGE), 3)
        return {
            "dim": choice(rng, DIMS),
            "condition_number": round_sig(log_uniform(rng, *COND_RANGE), 4),
            "rotated": bool(rng.uniform() < 0.5),
            "curvature": round_sig(log_uniform(rng, *CURVATURE_RANGE), 3),
            "init_scale": round_sig(log_uniform(rng, *INIT_SCALE_RANGE), 3),
            "noise_scale": noise,
            "seed": int(rng.integers(2 ** 31)),
        }

    def build(self, config):
        dim, cond = int(config["dim"]), float(config["condition_number"])
        if dim < 1 or cond < 1:
            raise ValueError(f"need dim >= 1 and condition_number >= 1, got {dim}, {cond}")
        rng = np.random.default_rng(config["seed"])
        rotation = random_rotation(rng, dim) if config["rotated"] else np.eye(dim)
        optimum = rng.standard_normal(dim) * (RADIUS / math.sqrt(dim))
        curvature, init_scale = float(config["curvature"]), float(config["init_scale"])
        lam = curvature * log_spectrum(math.log(cond), dim)
        # Expected norm of the initial gradient A (w0 - w*), with E|w0 - w*|^2 = R^2 (1 + s^2).
        grad_norm = RADIUS * math.sqrt((1 + init_scale ** 2) * float(np.mean(lam ** 2)))
        hp = {
            "log_cond": math.log(cond),
            "curvature": curvature,
            "init_scale": init_scale,
            "noise_std": float(config["noise_scale"]) * grad_norm / math.sqrt(dim),
            "rotation": rotation.astype(np.float32),
            "optimum": optimum.astype(np.float32),
        }
        return TaskParts(QuadraticSpec(dim), hp, {s: None for s in SPLITS})

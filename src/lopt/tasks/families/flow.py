"""RealNVP-style normalising flows fit by maximum likelihood to 2-D toy densities.

Each coupling layer keeps one coordinate fixed and moves the other by an affine map whose
log-scale and shift come from a small MLP of the fixed coordinate; layers alternate which
coordinate moves. Log-scales and shifts are soft-clipped with ``tanh`` so training stays stable.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from lopt.tasks import data
from lopt.tasks.base import TaskFamily, TaskParts, TaskSpec, choice
from lopt.tasks.families.common import (
    INITIALIZERS, apply_dense_stack, init_dense_stack, init_hparams)

DENSITIES = ("moons", "ring", "checkerboard", "spiral", "pinwheel", "banana")
LAYERS = (2, 4, 6)
HIDDEN = (32, 64)
ACTS = ("relu", "tanh")
BATCH = (64, 128)
TRAIN_FRACTION = (0.25, 0.5, 1.0)
NUM_POINTS = 4000
#: Bounds on each layer's log-scale and shift (data are standardised), so that no layer can
#: throw points far away however large the conditioner's outputs grow.
MAX_LOG_SCALE = 2.0
MAX_SHIFT = 4.0
#: Scale of each conditioner's output layer at initialisation, relative to the hidden layers.
OUTPUT_GAIN = 0.01
#: Each conditioner first maps its input coordinate to bounded features tanh(w (x - c)), with
#: centres c uniform on [-CENTRE_RANGE, CENTRE_RANGE] and slopes w ~ N(0, INPUT_GAIN^2) whatever
#: the initialiser (the fan-in is 1: the usual rules give slopes too gentle to bend within the
#: data's range, and a near-affine flow barely lowers the loss of standardised data). Bounded
#: features keep Adam's first steps small even for large ReLU initialisations. The hidden layer
#: (sampled activation) and the output layer follow the sampled initialiser.
CENTRE_RANGE = 2.5
INPUT_GAIN = 2.0


# ---------------------------------------------------------------------------------------------
# Densities.


def _ring(rng, n, modes=8, radius=2.0, std=0.2):
    angles = 2 * np.pi * rng.integers(modes, size=n) / modes
    centres = radius * np.stack([np.cos(angles), np.sin(angles)], 1)
    return centres + std * rng.standard_normal((n, 2))


def _checkerboard(rng, n):
    """Uniform on the black squares of a 4x4 board on [-2, 2]^2."""
    x = rng.uniform(-2, 2, size=(4 * n, 2))
    black = (np.floor(x[:, 0]) + np.floor(x[:, 1])) % 2 == 0
    return x[black][:n]


def _spiral(rng, n, turns=0.75, noise=0.1):
    """Two interleaved arms of an Archimedean spiral (short enough to fit within a few hundred
    steps)."""
    t = np.sqrt(rng.uniform(size=n)) * turns * 2 * np.pi
    arm = np.where(rng.integers(2, size=n) == 0, 1.0, -1.0)[:, None]
    x = arm * np.stack([t * np.cos(t), t * np.sin(t)], 1) / np.pi
    return x + noise * rng.standard_normal((n, 2))


def _pinwheel(rng, n, arms=5, twist=0.25):
    """Gaussian blobs stretched along ``arms`` curved spokes."""
    radial = rng.normal(1.0, 0.3, n)
    tangential = rng.normal(0.0, 0.1, n)
    angle = 2 * np.pi * rng.integers(arms, size=n) / arms + twist * np.exp(radial)
    cos, sin = np.cos(angle), np.sin(angle)
    return np.stack([radial * cos - tangential * sin, radial * sin + tangential * cos], 1)


def _banana(rng, n):
    """A Gaussian bent into a parabola: ``x2 | x1`` is normal around ``x1**2 / 2``."""
    x1 = rng.standard_normal(n)
    return np.stack([x1, 0.5 * x1 ** 2 + 0.3 * rng.standard_normal(n)], 1)


def sample_density(name: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points of a 2-D density, generated with a fixed seed."""
    from sklearn import datasets

    rng = np.random.default_rng(seed)
    if name == "moons":
        x, _ = datasets.make_moons(n, noise=0.05, random_state=seed)
    elif name == "ring":
        x = _ring(rng, n)
    elif name == "checkerboard":
        x = _checkerboard(rng, n)
    elif name == "spiral":
        x = _spiral(rng, n)
    elif name == "pinwheel":
        x = _pinwheel(rng, n)
    elif name == "banana":
        x = _banana(rng, n)
    else:
        raise ValueError(f"unknown density {name!r}; allowed: {', '.join(DENSITIES)}")
    return np.asarray(x, np.float32)


@functools.lru_cache(maxsize=None)
def density_splits(name: str) -> dict:
    """Four splits of ``{"x": [n, 2] float32}``, standardised with training-split statistics."""
    splits = data.split_arrays({"x": sample_density(name, NUM_POINTS)})
    mean, std = splits["train"]["x"].mean(0), splits["train"]["x"].std(0)
    return {s: {"x": ((d["x"] - mean) / std).astype(np.float32)} for s, d in splits.items()}


# ---------------------------------------------------------------------------------------------
# The flow.


def _soft_clip(x, bound):
    """``x`` near 0, smoothly saturating at ``+-bound``."""
    return bound * jnp.tanh(x / bound)


def _coupling(layer, x, i, activation):
    """Log-scale and shift for the coordinate that layer ``i`` moves, from the one it keeps
    (through bounded input features, then an MLP with the sampled activation)."""
    first, *rest = layer
    features = jnp.tanh(x[:, i % 2:i % 2 + 1] @ first["w"] + first["b"])
    raw = apply_dense_stack(rest, features, activation)
    return _soft_clip(raw[:, 0], MAX_LOG_SCALE), _soft_clip(raw[:, 1], MAX_SHIFT)


def forward(params, x, activation):
    """Data ``x`` to latents ``z``, and ``log |det dz/dx|`` per point."""
    log_det = jnp.zeros(x.shape[0])
    for i, layer in enumerate(params):
        log_scale, shift = _coupling(layer, x, i, activation)
        moved = 1 - i % 2
        x = x.at[:, moved].set(x[:, moved] * jnp.exp(log_scale) + shift)
        log_det = log_det + log_scale
    return x, log_det


def inverse(params, z, activation):
    """Latents ``z`` back to data space: undoes ``forward`` layer by layer."""
    for i in reversed(range(len(params))):
        log_scale, shift = _coupling(params[i], z, i, activation)
        moved = 1 - i % 2
        z = z.at[:, moved].set((z[:, moved] - shift) * jnp.exp(-log_scale))
    return z


def log_prob(params, x, activation):
    """Log-density of ``x`` under the flow with a standard-normal base distribution."""
    z, log_det = forward(params, x, activation)
    base = -0.5 * jnp.sum(z ** 2, -1) - jnp.log(2 * jnp.pi)
    return base + log_det


@dataclasses.dataclass(frozen=True)
class FlowSpec(TaskSpec):
    layers: int
    hidden: int
    activation: str
    batch_size: int

    def init(self, hp, key):
        """One conditioner per coupling layer: input features 1 -> hidden (tanh), a hidden layer
        hidden -> hidden (sampled activation), and an output layer -> (log-scale, shift).

        The output layer starts ``OUTPUT_GAIN`` times smaller, so the flow starts near the
        identity whatever the initialisation (shifts compound across layers).
        """
        def conditioner(k):
            k_slope, k_centre, k_rest = jax.random.split(k, 3)
            w = INPUT_GAIN * jax.random.normal(k_slope, (1, self.hidden))
            centres = jax.random.uniform(k_centre, (self.hidden,), jnp.float32,
                                         -CENTRE_RANGE, CENTRE_RANGE)
            middle, out = init_dense_stack(k_rest, (self.hidden, self.hidden, 2), hp)
            return [{"w": w, "b": -w[0] * centres}, middle,
                    {"w": OUTPUT_GAIN * out["w"], "b": out["b"]}]

        return [conditioner(k) for k in jax.random.split(key, self.layers)]

    def loss(self, hp, params, batch, key):
        return -jnp.mean(log_prob(params, batch["x"], self.activation))


class NormalisingFlow(TaskFamily):
    name = "flow"
    description = "RealNVP-style affine-coupling flows, maximum likelihood on 2-D toy densities."
    space = {
        "density": DENSITIES,
        "layers": LAYERS,
        "hidden": HIDDEN,
        "activation": ACTS,
        "batch_size": BATCH,
        "train_fraction": TRAIN_FRACTION,
        "initializer": INITIALIZERS,
        "init_scale": "log-uniform [0.5, 2] x initialiser gain (input layer: fixed N(0, 4))",
    }

    def sample_config(self, rng):
        return {
            "density": choice(rng, DENSITIES),
            "layers": choice(rng, LAYERS),
            "hidden": choice(rng, HIDDEN),
            "activation": choice(rng, ACTS),
            "batch_size": choice(rng, BATCH),
            "train_fraction": choice(rng, TRAIN_FRACTION),
            **init_hparams(rng),
        }

    def build(self, config):
        ds = density_splits(config["density"])
        spec = FlowSpec(layers=config["layers"], hidden=config["hidden"],
                        activation=config["activation"], batch_size=config["batch_size"])
        n_train = max(spec.batch_size, int(config["train_fraction"] * len(ds["train"]["x"])))
        hp = {"init_kind": config["init_kind"], "init_scale": config["init_scale"],
              "n_train": n_train}
        return TaskParts(spec, hp, ds)

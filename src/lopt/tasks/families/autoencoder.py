"""MLP autoencoders: reconstruct (optionally noise-corrupted) inputs through a narrow bottleneck."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lopt.tasks import data
from lopt.tasks.base import TaskFamily, TaskParts, TaskSpec, choice
from lopt.tasks.families.common import (
    ACTIVATIONS, INITIALIZERS, apply_dense_stack, init_dense_stack, init_hparams)

DATASETS = ("digits", "mnist1d")
HIDDEN = ((64,), (128,), (128, 64))
BOTTLENECK = (2, 8, 16)
ACTS = ("relu", "tanh", "gelu", "swish")
BATCH = (32, 128)
TRAIN_FRACTION = (0.25, 0.5, 1.0)
#: Standard deviation of Gaussian noise added to the encoder's input (0: plain autoencoder).
NOISE_STD = (0.0, 0.1, 0.3)


@dataclasses.dataclass(frozen=True)
class AutoencoderSpec(TaskSpec):
    """Encoder ``in_dim -> hidden -> bottleneck`` (linear code), decoder mirrors it back."""

    in_dim: int
    hidden: tuple
    bottleneck: int
    activation: str
    batch_size: int

    def init(self, hp, key):
        """Random layers, except that the decoder's output layer starts at zero: the initial
        reconstruction is the bias (0), so the initial loss is about 1 on standardised inputs
        however large the sampled initialiser scale (up to six layers compound it)."""
        k_enc, k_dec = jax.random.split(key)
        decoder = init_dense_stack(k_dec, (self.bottleneck, *self.hidden[::-1], self.in_dim), hp,
                                   zero_output=True)
        return {
            "encoder": init_dense_stack(k_enc, (self.in_dim, *self.hidden, self.bottleneck), hp),
            "decoder": decoder,
        }

    def encode(self, params, x):
        return apply_dense_stack(params["encoder"], x, self.activation)

    def decode(self, params, code):
        return apply_dense_stack(params["decoder"], code, self.activation)

    def loss(self, hp, params, batch, key):
        """Mean squared error between the clean input and the reconstruction of a noisy copy."""
        x = batch["x"]
        noisy = x + hp["noise_std"] * jax.random.normal(key, x.shape, x.dtype)
        return jnp.mean((self.decode(params, self.encode(params, noisy)) - x) ** 2)


class MLPAutoencoder(TaskFamily):
    name = "autoencoder"
    description = "MLP (denoising) autoencoders on digits / MNIST-1D, mean squared error."
    space = {
        "dataset": DATASETS,
        "hidden": HIDDEN,
        "bottleneck": BOTTLENECK,
        "activation": ACTS,
        "initializer": INITIALIZERS,
        "init_scale": "log-uniform [0.5, 2] x initialiser gain",
        "noise_std": NOISE_STD,
        "batch_size": BATCH,
        "train_fraction": TRAIN_FRACTION,
    }

    def sample_config(self, rng):
        return {
            "dataset": choice(rng, DATASETS),
            "hidden": list(choice(rng, HIDDEN)),
            "bottleneck": choice(rng, BOTTLENECK),
            "activation": choice(rng, ACTS),
            "batch_size": choice(rng, BATCH),
            "train_fraction": choice(rng, TRAIN_FRACTION),
            "noise_std": choice(rng, NOISE_STD),
            **init_hparams(rng),
        }

    def build(self, config):
        ds = data.classification(config["dataset"])
        inputs = {s: {"x": d["x"]} for s, d in ds.items()}  # labels unused
        spec = AutoencoderSpec(
            in_dim=inputs["train"]["x"].shape[1], hidden=tuple(config["hidden"]),
            bottleneck=config["bottleneck"], activation=config["activation"],
            batch_size=config["batch_size"])
        n_train = max(spec.batch_size, int(config["train_fraction"] * len(inputs["train"]["x"])))
        hp = {"init_kind": config["init_kind"], "init_scale": config["init_scale"],
              "noise_std": config["noise_std"], "n_train": n_train}
        return TaskParts(spec, hp, inputs)


assert set(ACTS) <= set(ACTIVATIONS)

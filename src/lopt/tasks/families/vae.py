"""MLP variational autoencoders on digits, trained on the negative ELBO.

Pixels are scaled to ``[0, 1]`` (not standardised) and modelled by a Bernoulli likelihood (binary
cross-entropy with soft targets); the posterior is a diagonal Gaussian, the prior ``N(0, I)``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.tasks import data
from lopt.tasks.base import TaskFamily, TaskParts, TaskSpec, choice
from lopt.tasks.families.common import (
    ACTIVATIONS, INITIALIZERS, apply_dense_stack, init_dense_stack, init_hparams)

LATENT = (2, 8, 16)
HIDDEN = ((64,), (128,), (128, 64))
ACTS = ("relu", "tanh", "gelu", "swish")
BATCH = (32, 128)
TRAIN_FRACTION = (0.25, 0.5, 1.0)
#: Range of the initialiser scale; narrower than the MLPs' as up to six layers compound it.
INIT_SCALE = (0.5, 1.5)
#: Floor on the posterior standard deviation, keeping ``log(std)`` finite.
MIN_STD = 1e-4


@functools.lru_cache(maxsize=None)
def digits_unit_interval() -> dict:
    """Digits pixels in ``[0, 1]``, cut into the same four splits as ``data.classification``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    arrays = {"x": np.asarray(d.data / 16.0, np.float32), "y": np.asarray(d.target, np.int32)}
    return data.split_arrays(arrays)


@dataclasses.dataclass(frozen=True)
class VAESpec(TaskSpec):
    """Encoder ``in_dim -> hidden -> (mean, std)``; decoder ``latent -> hidden[::-1] -> logits``."""

    in_dim: int
    hidden: tuple
    latent: int
    activation: str
    batch_size: int

    def init(self, hp, key):
        """Random layers, except that the decoder's output layer starts at zero: every pixel
        starts at probability 1/2, so the initial loss is ``in_dim * log 2`` plus the KL term
        however large the sampled initialiser scale (up to six layers compound it)."""
        k_enc, k_dec = jax.random.split(key)
        decoder = init_dense_stack(k_dec, (self.latent, *self.hidden[::-1], self.in_dim), hp,
                                   zero_output=True)
        return {
            "encoder": init_dense_stack(k_enc, (self.in_dim, *self.hidden, 2 * self.latent), hp),
            "decoder": decoder,
        }

    def posterior(self, params, x):
        """Mean and standard deviation of the diagonal Gaussian ``q(z | x)``."""
        out = apply_dense_stack(params["encoder"], x, self.activation)
        mean, raw_std = jnp.split(out, 2, axis=-1)
        return mean, jax.nn.softplus(raw_std) + MIN_STD

    def decode(self, params, z):
        """Bernoulli logits of every pixel given latent codes ``z``."""
        return apply_dense_stack(params["decoder"], z, self.activation)

    def loss(self, hp, params, batch, key):
        """Negative ELBO per example (nats), with one reparameterised sample drawn from ``key``."""
        x = batch["x"]
        mean, std = self.posterior(params, x)
        z = mean + std * jax.random.normal(key, mean.shape, mean.dtype)
        recon = optax.sigmoid_binary_cross_entropy(self.decode(params, z), x).sum(-1)
        return jnp.mean(recon + gaussian_kl(mean, std))


def gaussian_kl(mean, std):
    """``KL(N(mean, std^2) || N(0, 1))`` summed over the last axis."""
    return 0.5 * jnp.sum(mean ** 2 + std ** 2 - 1.0 - 2.0 * jnp.log(std), axis=-1)


class VAE(TaskFamily):
    name = "vae"
    description = "MLP variational autoencoders on digits in [0, 1], negative ELBO per example."
    space = {
        "latent": LATENT,
        "hidden": HIDDEN,
        "activation": ACTS,
        "initializer": INITIALIZERS,
        "init_scale": f"log-uniform {list(INIT_SCALE)} x initialiser gain",
        "batch_size": BATCH,
        "train_fraction": TRAIN_FRACTION,
    }

    def sample_config(self, rng):
        return {
            "latent": choice(rng, LATENT),
            "hidden": list(choice(rng, HIDDEN)),
            "activation": choice(rng, ACTS),
            "batch_size": choice(rng, BATCH),
            "train_fraction": choice(rng, TRAIN_FRACTION),
            **init_hparams(rng, scale_range=INIT_SCALE),
        }

    def build(self, config):
        splits = {s: {"x": d["x"]} for s, d in digits_unit_interval().items()}  # labels unused
        spec = VAESpec(in_dim=splits["train"]["x"].shape[1], hidden=tuple(config["hidden"]),
                       latent=config["latent"], activation=config["activation"],
                       batch_size=config["batch_size"])
        n_train = max(spec.batch_size, int(config["train_fraction"] * len(splits["train"]["x"])))
        hp = {"init_kind": config["init_kind"], "init_scale": config["init_scale"],
              "n_train": n_train}
        return TaskParts(spec, hp, splits)


assert set(ACTS) <= set(ACTIVATIONS)

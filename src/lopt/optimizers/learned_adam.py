"""Learned Adam: Adam whose log learning rate, betas and epsilon are meta-parameters.

The cheapest learned optimizer and a sanity check for meta-training: with
``theta = LearnedAdam().init(key)`` it is exactly ``optax.adam(1e-3)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from lopt.optimizers.base import LearnedOptimizer


def _logit(p):
    return jnp.log(p) - jnp.log1p(-p)


@dataclasses.dataclass(frozen=True)
class LearnedAdam(LearnedOptimizer):
    """Adam with meta-learned ``log(lr)``, ``logit(1 - b1)``, ``logit(1 - b2)``, ``log(eps)``."""

    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    name = "learned_adam"

    def init(self, key=None):
        del key
        return {
            "log_lr": jnp.log(jnp.float32(self.learning_rate)),
            "one_minus_b1": _logit(jnp.float32(1 - self.b1)),
            "one_minus_b2": _logit(jnp.float32(1 - self.b2)),
            "log_eps": jnp.log(jnp.float32(self.eps)),
        }

    @staticmethod
    def hyperparameters(theta) -> dict:
        """The Adam hyperparameters that ``theta`` encodes."""
        return {
            "learning_rate": jnp.exp(theta["log_lr"]),
            "b1": 1 - jax.nn.sigmoid(theta["one_minus_b1"]),
            "b2": 1 - jax.nn.sigmoid(theta["one_minus_b2"]),
            "eps": jnp.exp(theta["log_eps"]),
        }

    def optimizer(self, theta) -> optax.GradientTransformationExtraArgs:
        hp = self.hyperparameters(theta)
        return optax.with_extra_args_support(
            optax.adam(hp["learning_rate"], b1=hp["b1"], b2=hp["b2"], eps=hp["eps"]))

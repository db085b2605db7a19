"""The learner: owns theta and the outer optimizer, applies estimates from workers.

Estimates are clipped per element (at ``clip``) and applied with Adam. An estimate with any
non-finite element is dropped and counted, never applied; one computed for a theta more than
``max_staleness`` versions old is dropped too (asynchronous workers).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.meta.worker import Estimate


def outer_optimizer(learning_rate: float, clip: float, *, trainable=None
                    ) -> optax.GradientTransformation:
    """Clipped Adam; with ``trainable`` (top-level theta keys) the other entries are frozen."""
    opt = optax.chain(optax.clip(clip), optax.adam(learning_rate))
    if trainable is None:
        return opt

    def labels(theta):
        return {k: jax.tree_util.tree_map(lambda _, k=k: "train" if k in trainable else "frozen", v)
                for k, v in theta.items()}

    return optax.multi_transform({"train": opt, "frozen": optax.set_to_zero()}, labels)


class Learner:
    def __init__(self, theta, *, learning_rate: float = 3e-4, clip: float = 0.1,
                 trainable=None, max_staleness: int = 5):
        unknown = sorted(set(trainable or ()) - set(theta))
        if unknown:
            raise ValueError(f"trainable names {unknown} that theta lacks; it has "
                             f"{sorted(theta)}")
        self.theta = theta
        self.opt = outer_optimizer(learning_rate, clip, trainable=trainable)
        self.opt_state = self.opt.init(theta)
        self.version = 0
        self.max_staleness = max_staleness
        self.dropped = 0
        self._apply = jax.jit(self._apply_fn)

    def _apply_fn(self, theta, opt_state, grad):
        updates, opt_state = self.opt.update(grad, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state

    def apply(self, estimates: Sequence[Estimate]) -> dict[str, Any]:
        """Averages the usable estimates and takes one outer step; returns metrics."""
        usable, dropped = [], 0
        for est in estimates:
            finite = all(bool(np.all(np.isfinite(g))) for g in jax.tree_util.tree_leaves(est.grad))
            if not finite or self.version - est.version > self.max_staleness:
                dropped += 1
            else:
                usable.append(est.grad)
        self.dropped += dropped
        norm = float("nan")
        if usable:
            grad = jax.tree_util.tree_map(lambda *g: jnp.mean(jnp.stack(g), axis=0), *usable)
            norm = float(optax.tree.norm(grad))
            self.theta, self.opt_state = self._apply(self.theta, self.opt_state, grad)
            self.version += 1
        return {"estimate_norm": norm, "dropped": dropped, "dropped_total": self.dropped,
                "version": self.version}

    def state_dict(self) -> dict:
        return {"theta": self.theta, "opt_state": self.opt_state, "version": self.version,
                "dropped": self.dropped}

    def load_state_dict(self, state: dict) -> None:
        self.theta = state["theta"]
        self.opt_state = state["opt_state"]
        self.version = int(state["version"])
        self.dropped = int(state["dropped"])

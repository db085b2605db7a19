"""The per-parameter MLP learned optimizer (the paper's "FF" comparison point).

The same per-element features and network as the hierarchical optimizer, without the per-tensor
LSTM: the first layer's bias comes from the step, loss and tensor-size features directly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt.optimizers import features as F
from lopt.optimizers.base import LearnedOptimizer
from lopt.optimizers.nets import init_linear, init_mlp
from lopt.optimizers.per_element import (ADAM_LIKE_CHANNEL, COLLAPSE_RATIO, MAX_LOG_SCALE,
                                         STALL_RMS, per_element_outputs, raw_rows)


class MLPState(NamedTuple):
    step: jax.Array
    acc: Any
    clip_ms: Any
    loss_stats: F.LossStats


@dataclasses.dataclass(frozen=True)
class PerParameterMLP(LearnedOptimizer):
    """Per-element MLP learned optimizer (no per-tensor LSTM)."""

    ffn_hidden: tuple = (32, 32)
    clip_multiple: float = 10.0
    exp_mult: float = 1e-3
    step_mult: float = 1e-3
    skip_init: float = -1.0
    #: Guards on the step outside what meta-training saw (``per_element_outputs``).
    max_log_scale: float = MAX_LOG_SCALE
    stall_rms: float = STALL_RMS
    collapse_ratio: float = COLLAPSE_RATIO

    name = "mlp"

    def init(self, key):
        k = jax.random.split(key, 4)
        hidden = self.ffn_hidden[0]
        return {
            "context": {
                "step": init_linear(k[0], 2 * len(F.TIMESCALES), hidden)["w"],
                "loss": init_linear(k[1], 3, hidden)["w"],
                "size": init_linear(k[2], 4, hidden)["w"],
            },
            "ffn": init_mlp(k[3], (F.NUM_ELEMENT_FEATURES, *self.ffn_hidden, 2),
                            final_scale=1e-2),
            "skip": jnp.zeros((F.NUM_ELEMENT_FEATURES,)).at[ADAM_LIKE_CHANNEL].set(
                self.skip_init),
        }

    def optimizer(self, theta) -> optax.GradientTransformationExtraArgs:
        def init_fn(params):
            return MLPState(
                step=jnp.zeros((), jnp.int32),
                acc=jax.tree_util.tree_map(lambda p: F.init_accumulators(p.shape), params),
                clip_ms=jax.tree_util.tree_map(lambda p: jnp.zeros(()), params),
                loss_stats=F.init_loss_stats())

        return self._transformation(theta, init_fn)

    def _update(self, theta, grads, state: MLPState, params, value, valid_loss):
        treedef = jax.tree_util.tree_structure(params)
        p_leaves = treedef.flatten_up_to(params)
        g_leaves = treedef.flatten_up_to(grads)
        loss_f, loss_stats = F.loss_features(state.loss_stats, value, valid_loss)
        ctx = theta["context"]
        shared_bias = F.step_features(state.step) @ ctx["step"] + loss_f @ ctx["loss"]
        live = [i for i, p in enumerate(p_leaves) if p.size > 0]
        gs, acc_leaves, ms_leaves = F.preprocess(
            g_leaves, treedef.flatten_up_to(state.acc), treedef.flatten_up_to(state.clip_ms),
            live, state.step, multiple=self.clip_multiple)
        out = [jnp.zeros_like(p) for p in p_leaves]
        xs = [raw_rows(gs[i], p_leaves[i], acc_leaves[i]) for i in live]
        biases = [shared_bias + F.size_features(p_leaves[i]) @ ctx["size"] for i in live]
        if live:
            steps, _ = per_element_outputs(theta["ffn"], theta["skip"], xs, jnp.stack(biases),
                                           exp_mult=self.exp_mult, step_mult=self.step_mult,
                                           max_log_scale=self.max_log_scale,
                                           stall_rms=self.stall_rms,
                                           collapse_ratio=self.collapse_ratio)
            for step, i in zip(steps, live):
                out[i] = step.reshape(p_leaves[i].shape).astype(p_leaves[i].dtype)
        new_state = MLPState(state.step + 1, treedef.unflatten(acc_leaves),
                             treedef.unflatten(ms_leaves), loss_stats)
        return treedef.unflatten(out), new_state

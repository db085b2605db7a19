"""The hierarchical learned optimizer of Metz et al. 2020 (the paper's "LSTM_FF").

Per parameter tensor, an LSTM (shared weights, batched over tensors) reads permutation-invariant
summaries of the tensor, the training and validation loss features, the mean of the per-element
network's feedback outputs from the last step, and a pooled projection of every tensor's LSTM
output. Per element, a feed-forward network reads normalised gradient, parameter and
accumulator features; the LSTM's projected output, sinusoidal step features and tensor-size
features enter as the bias of its first layer, so that per-element work stays three batched
matrix products. It outputs a direction ``d`` and a magnitude ``a``; the update is
``d * exp(exp_mult * a) * step_mult``.

Additions to the published design: a learned linear skip from the per-element features to
``d``, initialised to ``-m / sqrt(v)`` (momentum 0.9), so an untrained optimizer is already a
sane, slow rule instead of diverging on every task (see DESIGN.md); and three guards that are
inactive in ordinary training (``max_log_scale``, ``stall_rms``, ``collapse_ratio``:
``per_element_outputs``): the magnitude cannot overflow, and the steps die out once the
gradient has vanished or collapsed far below its long-run size (a converged model).

With ``alignment`` the LSTM also reads, per tensor, the cosine between the gradient and each
momentum (``features.alignment_features``), the signal step-size adaptation methods use to
tell steps that are too small from steps that overshoot. Its input weights are a separate entry
``theta["align"]``, initialised to zero, so weights meta-trained without it start out
computing exactly the same updates (``lopt.meta.trainer.initial_theta``).

``kernel_step_mult`` multiplies the steps of tensors of rank 3 or more (convolution kernels; in
flax also the multi-head attention projections, ``DenseGeneral`` kernels). The meta-trained
rule moves the task set's conv kernels the right way by too little, and a multiplier of 2 wins
more of its held-out convnets, but trains a convnet and a transformer outside the task set
worse (``benchmarks/bench_kernel_step.py``, README: Results), so it is 1 by default and in
meta-training.

With ``adapt_rate`` above 0 the rule is wrapped in a step-size adaptation, per tensor or (with
``adapt_per_element``) per element (``step_adaptation.adapt_step_size``), which meta-training
leaves off; ``adapt_early_rate`` over the first ``adapt_early_steps`` steps makes it fast at the
start of a run (``step_adaptation.early_rate_schedule``), and ``adapt_min_log_scale=0`` lets it
only lengthen the rule's steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt.optimizers import features as F
from lopt.optimizers.base import LearnedOptimizer
from lopt.optimizers.nets import init_linear, init_mlp, lstm_step
from lopt.optimizers.per_element import (ADAM_LIKE_CHANNEL, COLLAPSE_RATIO, MAX_LOG_SCALE,
                                         STALL_RMS, per_element_outputs, raw_rows)
from lopt.optimizers.step_adaptation import (ADAPT_MAX_LOG_SCALE, adapt_step_size,
                                             early_rate_schedule)


class HierarchicalState(NamedTuple):
    step: jax.Array
    acc: Any  # per parameter: features.Accumulators
    clip_ms: Any  # per parameter: running mean square of the gradient
    lstm_h: jax.Array  # [tensors, lstm_size]
    lstm_c: jax.Array
    feedback: jax.Array  # [tensors, feedback_size]
    pooled: jax.Array  # [pool_size]
    loss_stats: F.LossStats


@dataclasses.dataclass(frozen=True)
class Hierarchical(LearnedOptimizer):
    """Per-tensor LSTM + per-element MLP learned optimizer (published sizes by default)."""

    lstm_size: int = 64
    ffn_hidden: tuple = (32, 32)
    feedback_size: int = 16
    pool_size: int = 16
    clip_multiple: float = 10.0
    exp_mult: float = 1e-3
    step_mult: float = 1e-3
    skip_init: float = -1.0
    #: Guards on the step outside what meta-training saw (``per_element_outputs``).
    max_log_scale: float = MAX_LOG_SCALE
    stall_rms: float = STALL_RMS
    collapse_ratio: float = COLLAPSE_RATIO
    #: Feed the LSTM gradient-momentum cosines (``features.alignment_features``).
    alignment: bool = False
    #: Step-size adaptation around the learned rule (``step_adaptation``): its rate (0: off, as
    #: in meta-training), the most a log step multiplier may move either way, and whether each
    #: element has its own multiplier (else each tensor).
    adapt_rate: float = 0.0
    adapt_max_log_scale: float = ADAPT_MAX_LOG_SCALE
    #: The least log step multiplier (None: ``-adapt_max_log_scale``; 0: steps only grow).
    adapt_min_log_scale: float | None = None
    adapt_per_element: bool = False
    #: A faster rate for the adaptation's first steps (``step_adaptation.early_rate_schedule``;
    #: 0 steps: none).
    adapt_early_rate: float = 0.0
    adapt_early_steps: int = 0
    #: Multiplier on the steps of tensors of rank 3 or more (1: the meta-trained rule as is).
    kernel_step_mult: float = 1.0

    name = "hierarchical"

    @property
    def adapts(self) -> bool:
        """Whether the rule is wrapped in the step-size adaptation (a rate at some step)."""
        return bool(self.adapt_rate or (self.adapt_early_rate and self.adapt_early_steps))

    @property
    def lstm_inputs(self) -> int:
        return F.NUM_TENSOR_FEATURES + 3 + self.feedback_size + self.pool_size

    def init(self, key):
        k = jax.random.split(key, 7)
        h = self.lstm_size
        skip = jnp.zeros((F.NUM_ELEMENT_FEATURES,)).at[ADAM_LIKE_CHANNEL].set(self.skip_init)
        theta = {
            "lstm": init_linear(k[0], self.lstm_inputs + h, 4 * h),
            "lstm_init": {"h": jnp.zeros((h,)), "c": jnp.zeros((h,))},
            "feedback_init": jnp.zeros((self.feedback_size,)),
            "pool": init_linear(k[1], h, self.pool_size),
            "context": {  # per-tensor bias of the per-element network's first layer
                "lstm": init_linear(k[2], h, self.ffn_hidden[0])["w"],
                "step": init_linear(k[3], 2 * len(F.TIMESCALES), self.ffn_hidden[0])["w"],
                "size": init_linear(k[4], 4, self.ffn_hidden[0])["w"],
            },
            "ffn": init_mlp(k[5], (F.NUM_ELEMENT_FEATURES, *self.ffn_hidden, 2),
                            final_scale=1e-2),
            "feedback": init_linear(k[6], self.ffn_hidden[-1], self.feedback_size, scale=0.1),
            "skip": skip,
        }
        if self.alignment:
            theta["align"] = {"w": jnp.zeros((F.NUM_ALIGNMENT_FEATURES, 4 * h))}
        return theta

    def optimizer(self, theta) -> optax.GradientTransformationExtraArgs:
        def init_fn(params):
            leaves = _live_leaves(params)
            n = max(len(leaves), 1)
            return HierarchicalState(
                step=jnp.zeros((), jnp.int32),
                acc=jax.tree_util.tree_map(lambda p: F.init_accumulators(p.shape), params),
                clip_ms=jax.tree_util.tree_map(lambda p: jnp.zeros(()), params),
                lstm_h=jnp.tile(theta["lstm_init"]["h"], (n, 1)),
                lstm_c=jnp.tile(theta["lstm_init"]["c"], (n, 1)),
                feedback=jnp.tile(theta["feedback_init"], (n, 1)),
                pooled=jnp.zeros((self.pool_size,)),
                loss_stats=F.init_loss_stats())

        tx = self._transformation(theta, init_fn)
        if self.adapts:
            rate = self.adapt_rate
            if self.adapt_early_steps:
                rate = early_rate_schedule(rate, early_rate=self.adapt_early_rate,
                                           early_steps=self.adapt_early_steps)
            tx = adapt_step_size(tx, rate=rate, max_log_scale=self.adapt_max_log_scale,
                                 min_log_scale=self.adapt_min_log_scale,
                                 per_element=self.adapt_per_element)
        return tx

    # -----------------------------------------------------------------------------------------

    def _update(self, theta, grads, state: HierarchicalState, params, value, valid_loss):
        treedef = jax.tree_util.tree_structure(params)
        p_leaves = treedef.flatten_up_to(params)
        g_leaves = treedef.flatten_up_to(grads)
        acc_leaves = treedef.flatten_up_to(state.acc)
        ms_leaves = treedef.flatten_up_to(state.clip_ms)
        live = [i for i, p in enumerate(p_leaves) if p.size > 0]

        loss_f, loss_stats = F.loss_features(state.loss_stats, value, valid_loss)

        gs, accs, mss = F.preprocess(g_leaves, acc_leaves, ms_leaves, live, state.step,
                                     multiple=self.clip_multiple)
        align_f = (jnp.stack([F.alignment_features(gs[i], acc_leaves[i].m) for i in live])
                   if self.alignment and live else None)

        out_leaves = [jnp.zeros_like(p) for p in p_leaves]
        if live:
            out_leaves, lstm_h, lstm_c, feedback, pooled = self._tensor_updates(
                theta, state, p_leaves, gs, accs, live, loss_f, out_leaves, align_f)
        else:
            lstm_h, lstm_c, feedback, pooled = (state.lstm_h, state.lstm_c, state.feedback,
                                                state.pooled)

        new_state = HierarchicalState(
            step=state.step + 1, acc=treedef.unflatten(accs), clip_ms=treedef.unflatten(mss),
            lstm_h=lstm_h, lstm_c=lstm_c, feedback=feedback, pooled=pooled,
            loss_stats=loss_stats)
        return treedef.unflatten(out_leaves), new_state

    def _tensor_updates(self, theta, state, p_leaves, gs, accs, live, loss_f, out_leaves,
                        align_f=None):
        # Per tensor: LSTM over [summaries, loss features, feedback mean, pooled context].
        tensor_in = jnp.stack([F.tensor_features(gs[i], p_leaves[i], accs[i]) for i in live])
        n = len(live)
        lstm_in = jnp.concatenate([
            tensor_in, jnp.tile(loss_f, (n, 1)), state.feedback,
            jnp.tile(state.pooled, (n, 1))], axis=1)
        lstm = theta["lstm"]
        if align_f is not None:  # the alignment rows go between the inputs and h
            w = lstm["w"]
            n_in = self.lstm_inputs
            lstm = {"w": jnp.concatenate([w[:n_in], theta["align"]["w"], w[n_in:]]),
                    "b": lstm["b"]}
            lstm_in = jnp.concatenate([lstm_in, align_f], axis=1)
        h, c = lstm_step(lstm, lstm_in, state.lstm_h, state.lstm_c)
        pooled = jnp.mean(jnp.tanh(h @ theta["pool"]["w"] + theta["pool"]["b"]), axis=0)

        ctx = theta["context"]
        step_f = F.step_features(state.step)
        size_f = tensor_in[:, -4:]  # log size, log first/last dim, is-scalar
        biases = h @ ctx["lstm"] + step_f @ ctx["step"] + size_f @ ctx["size"]

        raws = [raw_rows(gs[i], p_leaves[i], accs[i]) for i in live]
        steps, means = per_element_outputs(theta["ffn"], theta["skip"], raws, biases,
                                           exp_mult=self.exp_mult, step_mult=self.step_mult,
                                           max_log_scale=self.max_log_scale,
                                           stall_rms=self.stall_rms,
                                           collapse_ratio=self.collapse_ratio)
        out_leaves = list(out_leaves)
        for step, i in zip(steps, live):
            p = p_leaves[i]
            if p.ndim >= 3:
                step = step * self.kernel_step_mult
            out_leaves[i] = step.reshape(p.shape).astype(p.dtype)
        feedback = jnp.tanh(means @ theta["feedback"]["w"] + theta["feedback"]["b"])
        return out_leaves, h, c, feedback, pooled


def _live_leaves(params):
    return [p for p in jax.tree_util.tree_leaves(params) if p.size > 0]

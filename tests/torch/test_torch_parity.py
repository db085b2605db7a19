"""lopt.torch's updates equal the JAX implementation's, step after step, for every architecture.

Both run 50 steps from their own initial state on the same random gradients, losses and
parameters. The parameters are drawn afresh at each step, at a scale of 1e-3: the PyTorch update
is observed as ``p_after - p`` in float32, which is then exact to 1e-7 of the update (on
parameters of size 1 it would be exact only to 1e-4).

Tolerance: 1e-5 relative, plus 1e-5 of the tensor's largest update in absolute terms. Where the
network's direction output nearly cancels (updates far below the tensor's largest), the float32
rounding of its O(1) terms, which differs between XLA's and PyTorch's kernels, is an absolute
error of about 1e-6 of the largest update; no float32 implementation can match it relatively.
"""

import copy
import dataclasses
import functools

import numpy as np
import pytest

# minversion: without PyTorch, tests/torch itself would import as a namespace package "torch"
torch = pytest.importorskip("torch", minversion="2.1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import lopt  # noqa: E402
from lopt import pretrained  # noqa: E402
from lopt.torch import LearnedOptimizer  # noqa: E402

SHAPES = [(), (7,), (5, 6), (3, 3, 2, 4)]  # scalar, vector, matrix, 4-D kernel


@functools.partial(jax.jit, static_argnums=0)
def _jax_update(arch, theta, grads, state, params, loss, valid):
    """One JAX update, compiled once per architecture. A NaN ``valid`` is exactly the update
    without a validation loss (``features.loss_features`` ignores non-finite losses)."""
    return arch.optimizer(theta).update(grads, state, params, value=loss, valid_loss=valid)


def _compare(arch, theta, path, *, valid_every=None, grad_scale=None, steps=50, chunk=None,
             quiet_after=None, quiet_scale=0.0):
    rng = np.random.default_rng(0)
    state = arch.optimizer(theta).init([jnp.zeros(s) for s in SHAPES])
    params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
    opt = LearnedOptimizer(params, path)
    if chunk:  # several chunks per tensor: chunked reductions and recomputed features
        opt._rule.network(torch.device("cpu")).chunk = chunk
    for t in range(steps):
        ps = [np.asarray(1e-3 * rng.normal(size=s), np.float32) for s in SHAPES]
        scale = 10.0 ** rng.uniform(-3, 1) if grad_scale is None else grad_scale
        if quiet_after is not None and t >= quiet_after:
            scale = quiet_scale  # a vanished (0) or collapsed gradient: the steps shrink
        gs = [np.asarray(scale * rng.normal(size=s), np.float32) for s in SHAPES]
        loss = np.float32(2.0 / (1 + t) + 0.1 * rng.normal())
        valid = np.float32(loss + rng.uniform(0, 0.5)) if valid_every and t % valid_every == 0 \
            else None
        updates, state = _jax_update(arch, theta, [jnp.asarray(g) for g in gs], state,
                                     [jnp.asarray(p) for p in ps], loss,
                                     np.float32(np.nan) if valid is None else valid)
        with torch.no_grad():
            for p, value, g in zip(params, ps, gs):
                p.copy_(torch.from_numpy(value))
                p.grad = torch.from_numpy(g)
        opt.step(loss=float(loss), valid_loss=None if valid is None else float(valid))
        for i, (u, p0, p) in enumerate(zip(updates, ps, params)):
            got = p.detach().double().numpy() - p0
            want = np.asarray(u, np.float64)
            tol = 1e-5 * (np.abs(want) + np.abs(want).max()) + np.spacing(np.abs(p0))
            bad = np.abs(got - want) > tol
            assert not bad.any(), (f"step {t}, tensor {SHAPES[i]}: {bad.sum()} elements differ, "
                                   f"e.g. torch {got[bad][:3]} vs jax {want[bad][:3]}")


@pytest.mark.parametrize("valid_every", [None, 5], ids=["no-valid", "valid"])
@pytest.mark.parametrize("name", ["hierarchical", "mlp"])
def test_random_weights(weights_files, name, valid_every):
    _compare(*weights_files[name], valid_every=valid_every, chunk=16)


def test_learned_adam(weights_files):
    _compare(*weights_files["learned_adam"])


@pytest.mark.parametrize("valid_every", [None, 5], ids=["no-valid", "valid"])
def test_shipped_weights(valid_every):
    if pretrained.DEFAULT not in pretrained.available():
        pytest.skip("the shipped default weights are not in this checkout")
    path = pretrained.weights_path()
    theta, arch, _ = pretrained.load_pretrained()
    _compare(arch, theta, path, valid_every=valid_every)


@pytest.mark.parametrize("grad_scale", [1e-10, 1e10])
def test_extreme_gradient_scales(weights_files, grad_scale):
    """Tiny and huge gradients: float32 sums of squares under- or overflow, and are redone."""
    _compare(*weights_files["hierarchical"], grad_scale=grad_scale, steps=8)


def test_vanished_gradients(weights_files, tmp_path):
    """Zero gradients after 20 steps, with a stall threshold (0.05) that the momentum-0.9
    ``m / sqrt(v)`` crosses after about 35 of them. (Later, once momenta turn subnormal, the
    two differ by about 1e-4 relative: XLA flushes subnormals to zero, PyTorch keeps them.)"""
    arch, theta, _ = weights_files["hierarchical"]
    arch = dataclasses.replace(arch, stall_rms=0.05)
    lopt.save(tmp_path / "w.safetensors", theta, arch)
    _compare(arch, theta, tmp_path / "w.safetensors", steps=80, quiet_after=20, chunk=16)


def test_collapsed_gradients(weights_files):
    """Gradients a millionfold smaller after 20 steps: the collapse factor shrinks the steps."""
    _compare(*weights_files["hierarchical"], steps=60, quiet_after=20, quiet_scale=1e-6,
             chunk=16)


@pytest.mark.parametrize("name", ["hierarchical", "mlp"])
def test_bounded_magnitude(weights_files, tmp_path, name):
    """A learnable magnitude (exp_mult 1) far past its bound: both clip it alike."""
    arch, theta, _ = weights_files[name]
    arch = dataclasses.replace(arch, exp_mult=1.0)
    theta = copy.deepcopy(theta)
    theta["ffn"][-1]["b"][1] = 1e3
    lopt.save(tmp_path / "w.safetensors", theta, arch)
    _compare(arch, theta, tmp_path / "w.safetensors", steps=5)


@pytest.mark.parametrize("chunk", [None, 16], ids=["packed", "chunked"])
@pytest.mark.parametrize("grad_scale", [None, 1e-10])
def test_alignment_inputs(weights_files, tmp_path, chunk, grad_scale):
    """The LSTM's gradient-momentum cosines, with input weights large enough to matter."""
    arch, theta, _ = weights_files["hierarchical"]
    arch = dataclasses.replace(arch, alignment=True)
    shape = arch.init(jax.random.key(0))["align"]["w"].shape
    theta = {**theta, "align": {"w": np.asarray(jax.random.normal(jax.random.key(1), shape))}}
    lopt.save(tmp_path / "w.safetensors", theta, arch)
    _compare(arch, theta, tmp_path / "w.safetensors", chunk=chunk, grad_scale=grad_scale,
             valid_every=5, steps=20)


@pytest.mark.parametrize("per_element", [False, True], ids=["per-tensor", "per-element"])
@pytest.mark.parametrize("chunk", [None, 16], ids=["packed", "chunked"])
def test_step_adaptation(weights_files, tmp_path, chunk, per_element):
    """The step-size adaptation, at a rate large enough to move the multipliers by a factor of
    several within the run."""
    arch, theta, _ = weights_files["hierarchical"]
    arch = dataclasses.replace(arch, adapt_rate=0.5, adapt_max_log_scale=1.5,
                               adapt_per_element=per_element)
    lopt.save(tmp_path / "w.safetensors", theta, arch)
    _compare(arch, theta, tmp_path / "w.safetensors", chunk=chunk, valid_every=5, steps=30)


def test_early_step_adaptation(weights_files, tmp_path):
    """A fast adaptation rate over the first steps, then a slow one (and, per element, none; and
    with multipliers that only grow)."""
    arch, theta, _ = weights_files["hierarchical"]
    for late, per_element, lowest in ((0.05, False, None), (0.0, True, None), (0.0, False, 0.0)):
        arch = dataclasses.replace(arch, adapt_rate=late, adapt_early_rate=0.4,
                                   adapt_early_steps=8, adapt_per_element=per_element,
                                   adapt_min_log_scale=lowest)
        lopt.save(tmp_path / "w.safetensors", theta, arch)
        _compare(arch, theta, tmp_path / "w.safetensors", valid_every=5, steps=20)


def test_kernel_step_mult(weights_files, tmp_path):
    """The multiplier on rank >= 3 tensors (the 4-D kernel here), with the step adaptation."""
    arch, theta, _ = weights_files["hierarchical"]
    arch = dataclasses.replace(arch, kernel_step_mult=2.5, adapt_rate=0.5)
    lopt.save(tmp_path / "w.safetensors", theta, arch)
    _compare(arch, theta, tmp_path / "w.safetensors", valid_every=5, steps=20)

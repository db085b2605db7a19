"""Quadratic bowls: exact condition number, optimum, scale and gradient noise."""

import json

import jax
import numpy as np
import pytest

from lopt.tasks import get_family
from lopt.tasks.families.quadratic import QuadraticSpec, log_spectrum

BASE = {"dim": 16, "condition_number": 1000.0, "rotated": True, "curvature": 2.0,
        "init_scale": 0.5, "noise_scale": 0.0, "seed": 3}


def _task(**overrides):
    return get_family("quadratic").task({**BASE, **overrides})


def test_log_spectrum_has_the_condition_number_and_mean_one():
    lam = log_spectrum(np.log(500.0), 32)
    assert lam.max() / lam.min() == pytest.approx(500.0, rel=1e-9)
    assert lam.mean() == pytest.approx(1.0)
    assert np.all(np.diff(np.log(lam)) == pytest.approx(-np.log(500.0) / 31))


@pytest.mark.parametrize("rotated", [True, False])
def test_hessian_eigenvalues_match_the_config(rotated):
    task = _task(rotated=rotated)
    a = np.asarray(task.spec.hessian(task.hparams), np.float64)
    eig = np.linalg.eigvalsh(a)
    assert eig.max() / eig.min() == pytest.approx(1000.0, rel=1e-3)
    assert eig.mean() == pytest.approx(2.0, rel=1e-4)  # curvature = mean eigenvalue
    off_diagonal = np.abs(a - np.diag(np.diag(a))).max()
    assert (off_diagonal > 1e-2) if rotated else (off_diagonal == 0)


def test_loss_is_the_quadratic_form_and_zero_at_the_optimum():
    task = _task()
    hp, key = task.hparams, jax.random.key(0)
    w = task.init(jax.random.key(1))["w"]
    a = np.asarray(task.spec.hessian(hp), np.float64)
    delta = np.asarray(w, np.float64) - np.asarray(hp["optimum"], np.float64)
    assert float(task.loss({"w": w}, {}, key)) == pytest.approx(0.5 * delta @ a @ delta, rel=1e-4)
    assert float(task.loss({"w": hp["optimum"]}, {}, key)) == pytest.approx(0.0, abs=1e-10)
    grad = jax.grad(lambda p: task.loss(p, {}, key))({"w": w})["w"]
    np.testing.assert_allclose(grad, a @ delta, rtol=1e-4, atol=1e-5)


def test_initial_loss_is_order_one_to_ten():
    fam = get_family("quadratic")
    initial_loss = jax.jit(lambda spec, hp, k: spec.loss(hp, spec.init(hp, k), {}, k),
                           static_argnums=0)  # one compilation per dimension
    losses = []
    for i in range(30):
        task = fam.sample(jax.random.key(i))
        losses.append(float(initial_loss(task.spec, task.hparams, jax.random.key(0))))
    assert 0.1 < min(losses) and max(losses) < 40 and 0.5 < np.median(losses) < 15


def _gradients(task, w, num_keys=256):
    keys = jax.random.split(jax.random.key(7), num_keys)
    return jax.vmap(lambda k: jax.value_and_grad(task.loss)({"w": w}, {}, k))(keys)


def test_gradient_noise_is_zero_without_noise_scale():
    task = _task(noise_scale=0.0)
    assert float(task.hparams["noise_std"]) == 0.0
    losses, grads = _gradients(task, task.init(jax.random.key(0))["w"])
    assert np.ptp(np.asarray(grads["w"]), axis=0).max() == 0.0
    assert np.ptp(np.asarray(losses)) == 0.0


def test_gradient_noise_has_the_traced_std_and_leaves_the_loss_exact():
    task = _task(noise_scale=0.5)
    std = float(task.hparams["noise_std"])
    assert std > 0
    w = task.init(jax.random.key(0))["w"]
    losses, grads = _gradients(task, w, 2048)
    exact = jax.grad(lambda p: _task().loss(p, {}, jax.random.key(0)))({"w": w})["w"]
    noise = np.asarray(grads["w"] - exact)
    assert noise.std() == pytest.approx(std, rel=0.05)
    assert abs(noise.mean()) < 5 * std / np.sqrt(noise.size)
    np.testing.assert_allclose(losses, losses[0], rtol=1e-6)  # the loss value is noise-free


def test_configs_are_json_deterministic_and_one_bucket_per_dim():
    fam = get_family("quadratic")
    cfgs = [fam.sample_config(np.random.default_rng(i)) for i in range(40)]
    assert all(json.loads(json.dumps(c)) == c for c in cfgs)
    assert {c["dim"] for c in cfgs} == {16, 64, 256}
    assert all(1 <= c["condition_number"] <= 1e4 for c in cfgs)
    t1, t2 = _task(seed=1), _task(seed=1)
    np.testing.assert_array_equal(t1.hparams["rotation"], t2.hparams["rotation"])
    t3 = _task(seed=2, condition_number=3.0, rotated=False, noise_scale=0.1)
    assert t1.bucket == t3.bucket  # traced differences only: one compiled program
    assert _task(dim=64).bucket != t1.bucket
    assert isinstance(t1.spec, QuadraticSpec)

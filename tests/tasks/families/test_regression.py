"""Synthetic regression: exact feature conditioning, teacher targets, label noise, loss scale."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.tasks import SPLITS, get_family
from lopt.tasks.families.regression import make_data, num_examples

BASE = {"kind": "linear", "dim": 16, "condition_number": 300.0, "rotated": True,
        "label_noise": 0.0, "batch_size": 32, "init_scale": 0.5, "seed": 5}


def _task(**overrides):
    return get_family("regression").task({**BASE, **overrides})


@pytest.mark.parametrize("rotated", [True, False])
def test_every_split_has_the_sampled_condition_number(rotated):
    splits = make_data("linear", 16, 300.0, 0.1, rotated, seed=1)
    for split in SPLITS:
        x = splits[split]["x"].astype(np.float64)
        cov = x.T @ x / len(x)
        eig = np.linalg.eigvalsh(cov)
        assert eig.max() / eig.min() == pytest.approx(300.0, rel=1e-3), split
        assert eig.mean() == pytest.approx(1.0, rel=1e-4)
        off_diagonal = np.abs(cov - np.diag(np.diag(cov))).max()
        assert (off_diagonal > 1e-2) if rotated else (off_diagonal < 1e-4)


def test_split_sizes_dtypes_and_determinism():
    a = make_data("logistic", 64, 10.0, 0.1, True, seed=2)
    b = make_data("logistic", 64, 10.0, 0.1, True, seed=2)
    c = make_data("logistic", 64, 10.0, 0.1, True, seed=3)
    assert sum(len(a[s]["y"]) for s in SPLITS) == num_examples(64)
    for s in SPLITS:
        assert a[s]["x"].dtype == np.float32 and a[s]["y"].dtype == np.float32
        assert a[s]["x"].shape == (len(a[s]["y"]), 64) and len(a[s]["y"]) >= 64
        np.testing.assert_array_equal(a[s]["x"], b[s]["x"])
    assert not np.allclose(a["train"]["x"], c["train"]["x"])


def test_noiseless_linear_targets_are_an_exact_linear_function_with_unit_variance():
    splits = make_data("linear", 16, 1e3, 0.0, True, seed=4)
    x = np.concatenate([splits[s]["x"] for s in SPLITS]).astype(np.float64)
    y = np.concatenate([splits[s]["y"] for s in SPLITS]).astype(np.float64)
    w, *_ = np.linalg.lstsq(x, y, rcond=None)
    assert np.abs(x @ w - y).max() < 1e-4
    assert y.var() == pytest.approx(1.0, abs=0.1)


def test_linear_label_noise_has_the_configured_std():
    clean = make_data("linear", 16, 10.0, 0.0, True, seed=6)["train"]
    noisy = make_data("linear", 16, 10.0, 0.3, True, seed=6)["train"]
    np.testing.assert_array_equal(clean["x"], noisy["x"])
    assert (noisy["y"] - clean["y"]).std() == pytest.approx(0.3, rel=0.1)


def test_logistic_labels_are_binary_and_flipped_at_the_noise_rate():
    clean = make_data("logistic", 16, 10.0, 0.0, True, seed=8)
    noisy = make_data("logistic", 16, 10.0, 0.2, True, seed=8)
    y = np.concatenate([clean[s]["y"] for s in SPLITS])
    flipped = np.concatenate([clean[s]["y"] != noisy[s]["y"] for s in SPLITS])
    assert set(np.unique(y)) == {0.0, 1.0} and 0.4 < y.mean() < 0.6
    assert flipped.mean() == pytest.approx(0.2, abs=0.03)
    # Noiseless labels are separable by a linear function through the origin.
    x = np.concatenate([clean[s]["x"] for s in SPLITS]).astype(np.float64)
    w, *_ = np.linalg.lstsq(x, 2 * y - 1, rcond=None)
    assert np.mean((x @ w > 0) == (y > 0.5)) > 0.9


@pytest.mark.parametrize("kind, expected", [("linear", 0.5 * (1 + 0.5 ** 2)),
                                            ("logistic", np.log(2.0))])
def test_initial_loss_is_order_one(kind, expected):
    task = _task(kind=kind)
    batch = task.eval_batch("train", 512)
    losses = jax.vmap(lambda k: task.loss(task.init(k), batch, k))(
        jax.random.split(jax.random.key(0), 64))  # expectation over initialisations
    assert float(losses.mean()) == pytest.approx(expected, rel=0.1)


def test_linear_loss_is_zero_at_the_least_squares_solution_without_noise():
    task = _task()
    x, y = task.data["train"]["x"], task.data["train"]["y"]
    w, *_ = np.linalg.lstsq(np.asarray(x, np.float64), np.asarray(y, np.float64), rcond=None)
    params = {"w": jnp.asarray(w, jnp.float32), "b": jnp.zeros(())}
    assert float(task.loss(params, {"x": x, "y": y}, jax.random.key(0))) < 1e-8


def test_sampled_configs_are_json_and_in_range():
    fam = get_family("regression")
    cfgs = [fam.sample_config(np.random.default_rng(i)) for i in range(40)]
    assert all(json.loads(json.dumps(c)) == c for c in cfgs)
    assert {c["kind"] for c in cfgs} == {"linear", "logistic"}
    assert {c["dim"] for c in cfgs} == {16, 64, 256}
    assert all(1 <= c["condition_number"] <= 1e4 and 0 <= c["label_noise"] <= 0.3 for c in cfgs)

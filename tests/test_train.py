"""Inner training: curves, divergence, vmapped sweeps, extra args and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt.tasks import get_family

CONFIG = {"dataset": "digits", "hidden": [32], "activation": "relu", "batch_size": 32,
          "train_fraction": 1.0, "init_kind": 0, "init_scale": 1.0}


@pytest.fixture(scope="module")
def task():
    return get_family("mlp").task(CONFIG)


def test_records_every_step_and_evaluations(task):
    r = lopt.train(task, optax.adam(1e-2), 103, jax.random.key(0), eval_every=10)
    assert r.train_loss.shape == (103,)
    assert list(r.eval_steps) == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 103]
    assert set(r.eval_loss) == set(lopt.tasks.SPLITS)
    assert all(v.shape == (12,) for v in r.eval_loss.values())
    assert float(r.eval_loss["train"][-1]) < 0.5 * float(r.eval_loss["train"][0])
    assert not bool(r.diverged) and int(r.diverged_at) == -1


def test_matches_a_hand_written_loop(task):
    """The compiled run is plain SGD on the sampled minibatches: redo the first steps by hand."""
    key = jax.random.key(3)
    r = lopt.train(task, optax.sgd(0.1), 5, key, eval_every=5)
    k_init, k_steps, _ = jax.random.split(key, 3)
    params = task.init(k_init)
    for t in range(5):
        k_batch, k_loss, _ = jax.random.split(jax.random.fold_in(k_steps, t), 3)
        batch = task.batch("train", k_batch)
        loss, grads = jax.value_and_grad(task.loss)(params, batch, k_loss)
        np.testing.assert_allclose(r.train_loss[t], loss, rtol=1e-5)
        params = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
    for a, b in zip(jax.tree_util.tree_leaves(r.params), jax.tree_util.tree_leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_divergence_stops_cleanly(task):
    r = lopt.train(task, optax.sgd(1e30), 50, jax.random.key(0), eval_every=10)
    assert bool(r.diverged)
    at = int(r.diverged_at)
    assert 0 <= at < 50
    assert np.all(np.isfinite(np.asarray(r.train_loss[:at])))
    assert np.all(np.isnan(np.asarray(r.train_loss[at + 1:])))
    for leaf in jax.tree_util.tree_leaves(r.params):
        assert np.all(np.isfinite(np.asarray(leaf)))  # frozen at the last finite parameters
    assert np.isnan(float(r.eval_loss["test"][-1]))


def test_vmapped_sweep_equals_separate_runs(task):
    lrs = jnp.array([1e-3, 1e-2, 1e-1])
    keys = jnp.stack([jax.random.key(7)] * 3)
    many = lopt.train_many(task, optax.adam, 40, keys, opt_hparams=lrs, eval_every=20)
    assert many.train_loss.shape == (3, 40)
    for i, lr in enumerate([1e-3, 1e-2, 1e-1]):
        one = lopt.train(task, optax.adam, 40, jax.random.key(7), opt_hparams=jnp.float32(lr),
                         eval_every=20)
        np.testing.assert_allclose(many.train_loss[i], one.train_loss, rtol=2e-4, atol=1e-5)


def test_vmaps_tasks_of_one_bucket():
    fam = get_family("mlp")
    tasks = [fam.task({**CONFIG, "init_scale": s}) for s in (0.5, 1.0, 2.0)]
    assert len({t.bucket for t in tasks}) == 1
    r = lopt.train_many(tasks, optax.adam(1e-2), 20, jax.random.key(0), eval_every=20)
    assert r.train_loss.shape == (3, 20)
    # Same key, different init scales: the initial losses differ.
    assert len(set(np.round(np.asarray(r.eval_loss["train"][:, 0]), 5))) == 3


def test_passes_value_and_validation_loss(task):
    seen = {}

    def spy():
        def update(updates, state, params=None, *, value=None, valid_loss=None, **extra):
            seen["value"], seen["valid"] = value, valid_loss
            return jax.tree_util.tree_map(lambda g: -1e-2 * g, updates), state
        return optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)

    lopt.train(task, spy(), 3, jax.random.key(0), valid_every=10)
    assert seen["value"] is not None and seen["valid"] is not None
    plateau = optax.chain(optax.adam(1e-2), optax.contrib.reduce_on_plateau())
    r = lopt.train(task, plateau, 30, jax.random.key(0))
    assert np.isfinite(float(r.eval_loss["train"][-1]))


@pytest.mark.parametrize("steps", [0, -5, 2.5, True])
def test_rejects_bad_step_counts(task, steps):
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        lopt.train(task, optax.adam(1e-3), steps, jax.random.key(0))


def test_rejects_non_optax_optimizers(task):
    with pytest.raises(TypeError, match="optax.GradientTransformation"):
        lopt.train(task, lambda g: g, 10, jax.random.key(0))
    with pytest.raises(TypeError, match="optax.GradientTransformation"):
        lopt.train(task, "adam", 10, jax.random.key(0))


def test_rejects_unknown_eval_split(task):
    with pytest.raises(ValueError, match="unknown eval split"):
        lopt.train(task, optax.adam(1e-3), 10, jax.random.key(0), eval_splits=("dev",))

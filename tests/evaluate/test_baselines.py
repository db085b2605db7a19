"""Baseline sweeps, scores and the global learning rate."""

import jax
import numpy as np
import pytest

from lopt.evaluate import (ADAM_LEARNING_RATES, BaselineStore, fill_store, global_learning_rate,
                           normalise, run_sweep, steps_to_reach)
from lopt.evaluate.metrics import downsample
from lopt.tasks import get_family

CONFIG = {"dataset": "breast_cancer", "hidden": [16], "activation": "tanh", "batch_size": 32,
          "train_fraction": 1.0, "init_kind": 1, "init_scale": 1.0}


def test_downsample_and_normalise():
    curve = np.arange(100.0)
    np.testing.assert_allclose(downsample(curve, 4), [12, 37, 62, 87])
    assert np.isnan(downsample(np.r_[np.ones(50), np.full(50, np.nan)], 2)[1])
    np.testing.assert_allclose(normalise([3.0, 2.0, 1.0, 5.0, np.nan], 3.0, 1.0),
                               [1.0, 0.5, 0.0, 1.0, 1.0])
    assert steps_to_reach([5, 4, 3, 2], 3) == 3 and steps_to_reach([5, 4], 1) == np.inf


@pytest.fixture(scope="module")
def sweep():
    task = get_family("mlp").task(CONFIG)
    return run_sweep(task, "adam_tuned", 200, jax.random.key(0))


def test_adam_sweep_covers_fourteen_rates_and_picks_the_best(sweep):
    assert len(ADAM_LEARNING_RATES) == 14
    assert sweep["sweep"]["hparams"]["learning_rate"] == pytest.approx(ADAM_LEARNING_RATES)
    means = np.asarray(sweep["sweep"]["mean_loss"])
    finite = np.where(np.isfinite(means), means, np.inf)
    assert sweep["mean_loss"] == pytest.approx(finite.min())
    lr = sweep["hparams"]["learning_rate"]
    assert lr == pytest.approx(ADAM_LEARNING_RATES[int(np.argmin(finite))])
    # a reasonable rate wins over the extremes on this easy task
    assert 1e-4 < lr < 0.5
    assert sweep["best_loss"] < sweep["initial_loss"]
    assert len(sweep["curve"]["train"]) == 50 and len(sweep["sweep"]["curves"]) == 14


def test_fill_store_then_global_rate(tmp_path, sweep):
    task = get_family("mlp").task(CONFIG)
    store = BaselineStore(tmp_path, num_steps=200)
    store.put(task, {"adam_tuned": sweep}, seed=0)
    records = fill_store([task], store, names=["adam_tuned"], progress=False)  # nothing to run
    assert records[0]["baselines"]["adam_tuned"]["mean_loss"] == sweep["mean_loss"]
    lr, scores = global_learning_rate(records)
    assert lr == pytest.approx(sweep["hparams"]["learning_rate"], rel=1e-6)  # its own best rate
    assert scores.shape == (1,) and scores[0] <= 1.0
    with pytest.raises(ValueError, match="unknown baseline 'lbfgs'"):
        fill_store([task], store, names=["lbfgs"], progress=False)

"""The benchmark: aligned with the stored baselines, scored right, reported to disk."""

import json

import numpy as np
import pytest

from lopt.evaluate import ADAM_LEARNING_RATES, BaselineStore
from lopt.evaluate.benchmark import benchmark, score, summary
from lopt.evaluate.report import write_report
from lopt.optimizers import LearnedAdam
from lopt.tasks.taskset import sample_tasks


def _record(curve, sweep_mean):
    steps = [10, 20, 30, 40]
    return {"task_id": "quadratic/x", "family": "quadratic", "baselines": {"adam_tuned": {
        "initial_loss": 10.0, "best_loss": 0.0, "final_loss": curve[-1], "mean_loss": 2.0,
        "curve": {"steps": steps, "train": curve}, "hparams": {"learning_rate": 0.1},
        "sweep": {"mean_loss": sweep_mean, "best_loss": [0.0] * len(sweep_mean)}}}}


def test_score_normalises_counts_wins_and_speed_up():
    record = _record([8.0, 4.0, 2.0, 1.0], [5.0, 2.0, 3.0])
    ours = {"mean_loss": 3.0, "final_loss": 2.0, "diverged": False,
            "curve": {"steps": [10, 20, 30, 40], "train": [6.0, 3.0, 2.5, 2.0]}}
    s = score(record, ours, global_index=2)
    assert s["normalised"] == pytest.approx(0.3)
    assert s["adam_tuned"] == pytest.approx(0.2) and s["adam_global"] == pytest.approx(0.3)
    assert not s["win_tuned"] and not s["win_global"]  # ties are not wins
    assert s["speedup"] == pytest.approx(30 / 40)  # Adam reaches 2.0 at step 30, we at 40
    fast = {**ours, "mean_loss": 1.0, "curve": {"steps": [10, 20, 30, 40],
                                                "train": [2.0, 1.0, 0.5, 0.5]}}
    s = score(record, fast, global_index=2)
    assert s["win_tuned"] and s["win_global"]
    assert s["speedup"] == np.inf  # tuned Adam never reaches 0.5
    agg = summary([s, score(record, ours, global_index=2)])
    assert agg["win_fraction_tuned"] == 0.5 and agg["median_speedup"] == np.inf


def test_learned_adam_at_the_tuned_rate_scores_exactly_as_tuned_adam(tmp_path):
    # Same seed -> same init and minibatches as the stored sweep, so learned Adam set to the
    # tuned learning rate must reproduce tuned Adam's normalised loss.
    tasks = sample_tasks("held_out", 2, families=["quadratic"], subset="test")
    store = BaselineStore(tmp_path / "store", num_steps=60)
    first = benchmark(tasks[:1], LearnedAdam(), LearnedAdam().init(), num_steps=60, store=store,
                      modes=("train_only",), progress=False)
    lr = store.get(tasks[0])["baselines"]["adam_tuned"]["hparams"]["learning_rate"]
    learned = LearnedAdam(learning_rate=lr)
    results = benchmark(tasks, learned, learned.init(), num_steps=60, store=store,
                        progress=False)
    row = results["modes"]["train_only"]["tasks"][0]
    assert row["normalised"] == pytest.approx(row["adam_tuned"], abs=1e-5)
    assert not row["diverged"]
    assert first["modes"]["train_only"]["tasks"][0]["normalised"] != pytest.approx(
        row["normalised"])
    assert results["adam_global_lr"] in [pytest.approx(x) for x in ADAM_LEARNING_RATES]
    out = write_report(results, tmp_path / "report", title="t")
    for name in ("summary.md", "results.json", "differences.png", "wins.png", "curves.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "results.json").read_text())["modes"]["valid"]["summary"]["tasks"] == 2
    assert "| training loss only | 2 |" in (out / "summary.md").read_text()


def test_unknown_mode_and_empty_task_list_are_clear_errors(tmp_path):
    store = BaselineStore(tmp_path, num_steps=10)
    with pytest.raises(ValueError, match="unknown benchmark mode"):
        benchmark(sample_tasks("held_out", 1, families=["quadratic"]), LearnedAdam(),
                  LearnedAdam().init(), num_steps=10, store=store, modes=("x",))
    with pytest.raises(ValueError, match="no tasks"):
        benchmark([], LearnedAdam(), LearnedAdam().init(), num_steps=10, store=store)


def test_masked_validation_mode_equals_a_run_without_validation_losses():
    import jax
    import jax.numpy as jnp

    from lopt.evaluate.benchmark import run_learned
    from lopt.optimizers import Hierarchical
    from lopt.train import train_many

    task = sample_tasks("held_out", 1, families=["regression"])[0]
    learned = Hierarchical(lstm_size=8, ffn_hidden=(8, 8))
    theta = learned.init(jax.random.key(3))
    runs = run_learned([task], learned, theta, 30)
    plain = train_many([task], learned.optimizer(theta), 30, jnp.stack([jax.random.key(0)]))
    fed = train_many([task], learned.optimizer(theta), 30, jnp.stack([jax.random.key(0)]),
                     valid_every=10)
    np.testing.assert_allclose(runs["train_only"][0]["mean_loss"],
                               float(np.mean(plain.train_loss)), rtol=1e-6)
    np.testing.assert_allclose(runs["valid"][0]["mean_loss"],
                               float(np.mean(fed.train_loss)), rtol=1e-6)
    assert runs["valid"][0]["mean_loss"] != runs["train_only"][0]["mean_loss"]


def test_summary_writes_an_unreached_speed_up_in_words():
    from lopt.evaluate.report import markdown

    summary = {"tasks": 3, "mean_normalised": 0.1, "adam_tuned_mean_normalised": 0.2,
               "adam_global_mean_normalised": 0.3, "win_fraction_tuned": 1.0,
               "win_fraction_global": 1.0, "diverged_fraction": 0.0}
    results = {"num_steps": 10, "adam_global_lr": 0.01, "modes": {
        "valid": {"summary": {**summary, "median_speedup": float("inf")},
                  "by_family": {"mlp": {**summary, "median_speedup": 1.25}}}}}
    text = markdown(results, title="t")
    assert "| 100% | not reached | 0% |" in text
    assert "| mlp | 3 | 0.100 | 0.200 | 100% | 100% | 1.25x |" in text
    assert "infx" not in text

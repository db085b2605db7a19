"""Meta-training end to end: learning happens, resume is exact, NaNs never reach theta."""

import json

import jax
import numpy as np
import pytest

from lopt.meta.config import MetaTrainConfig
from lopt.meta.trainer import MetaTrainer, meta_train, resume, select_tasks
from lopt.optimizers import LearnedAdam


def _config(**kw):
    base = dict(optimizer="learned_adam", optimizer_config={"learning_rate": 1e-4},
                families=["quadratic"], num_pools=1, pairs=8, max_tasks_per_pool=16,
                truncation=10, horizon=100, min_length=20, normalise="initial",
                outer_lr=0.05, sigma=0.05, outer_steps=150, checkpoint_every=50,
                eval_every=1000, eval_tasks=2, eval_steps=50, seed=0)
    base.update(kw)
    return MetaTrainConfig.from_dict(base)


def _losses(run_dir):
    return [json.loads(line)["meta_loss"] for line in (run_dir / "metrics.jsonl").open()]


@pytest.mark.parametrize("estimator", ["pes", "tbptt"])
def test_meta_training_learned_adam_lowers_the_meta_loss(tmp_path, estimator):
    learner = meta_train(_config(estimator=estimator), tmp_path / "run", progress=False)
    losses = _losses(tmp_path / "run")
    assert len(losses) == 150
    first, last = np.mean(losses[:10]), np.mean(losses[-20:])
    assert last < 0.6 * first, (first, last)
    lr = float(LearnedAdam.hyperparameters(learner.theta)["learning_rate"])
    assert lr > 3e-4  # it learned that 1e-4 is far too small
    assert (tmp_path / "run" / "theta.safetensors").exists()


def test_resume_gives_identical_theta(tmp_path):
    config = _config(outer_steps=6, checkpoint_every=3)
    straight = MetaTrainer(config, tmp_path / "a", progress=False).run()
    first = MetaTrainer(config, tmp_path / "b", progress=False)
    first.run(until=3)  # checkpoint at 3, then "killed"
    del first
    resumed = resume(tmp_path / "b", progress=False)
    for a, b in zip(jax.tree_util.tree_leaves(straight.theta),
                    jax.tree_util.tree_leaves(resumed.theta)):
        np.testing.assert_array_equal(a, b)
    assert [r["step"] for r in map(json.loads, (tmp_path / "b" / "metrics.jsonl").open())] == \
        list(range(1, 7))
    with pytest.raises(ValueError, match="already holds a run"):
        meta_train(config, tmp_path / "b", progress=False)


def test_snapshots_keep_theta_at_every_multiple_of_snapshot_every(tmp_path):
    from lopt.weights import load

    config = _config(outer_steps=4, checkpoint_every=4, snapshot_every=2)
    final = MetaTrainer(config, tmp_path / "a", progress=False).run()
    early = MetaTrainer(config, tmp_path / "b", progress=False).run(until=2)
    snaps = sorted(p.name for p in (tmp_path / "a" / "snapshots").iterdir())
    assert snaps == ["step2.safetensors", "step4.safetensors"]
    for step, learner in ((2, early), (4, final)):
        theta, _, card = load(tmp_path / "a" / "snapshots" / f"step{step}.safetensors")
        assert card["provenance"]["outer_steps"] == step
        for a, b in zip(jax.tree_util.tree_leaves(theta),
                        jax.tree_util.tree_leaves(learner.theta)):
            np.testing.assert_array_equal(a, b)
    assert not (tmp_path / "b" / "snapshots" / "step4.safetensors").exists()


def test_pools_rotate_over_buckets_and_resume_exactly(tmp_path):
    config = _config(families=["quadratic", "test_function"], num_pools=2, rotate_every=4,
                     outer_steps=8, checkpoint_every=3, pairs=2)
    families = [[ts[0].family for ts in select_tasks(config, step=s)] for s in range(8)]
    assert all(f == ["quadratic", "test_function"] for f in families)  # round-robin slots
    buckets = [[ts[0].bucket for ts in select_tasks(config, step=s)] for s in range(8)]
    changed = [s for s in range(1, 8) for i in range(2) if buckets[s][i] != buckets[s - 1][i]]
    assert changed and len(changed) == len(set(changed))  # staggered: one slot at a time
    trainer = MetaTrainer(config, tmp_path / "a", progress=False)
    straight = trainer.run()
    assert len(trainer.worker._programs) <= 2  # programs of rotated-out buckets are dropped
    first = MetaTrainer(config, tmp_path / "b", progress=False)
    first.run(until=6)  # checkpointed at 6, after both slots have rotated once
    resumed = resume(tmp_path / "b", progress=False)
    for a, b in zip(jax.tree_util.tree_leaves(straight.theta),
                    jax.tree_util.tree_leaves(resumed.theta)):
        np.testing.assert_array_equal(a, b)


def test_resume_from_the_learner_checkpoint_alone(tmp_path):
    # What a committed run folder holds: theta and the outer optimizer, not the inner runs.
    config = _config(outer_steps=4, checkpoint_every=2)
    first = MetaTrainer(config, tmp_path / "run", progress=False)
    first.run(until=2)
    theta_at_2 = jax.tree_util.tree_map(np.asarray, first.learner.theta)
    (tmp_path / "run" / "checkpoint.npz").unlink()
    trainer = MetaTrainer(config, tmp_path / "run", progress=False)
    trainer.restore()
    assert trainer.step == 2
    for a, b in zip(jax.tree_util.tree_leaves(theta_at_2),
                    jax.tree_util.tree_leaves(trainer.learner.theta)):
        np.testing.assert_array_equal(a, b)
    learner = resume(tmp_path / "run", progress=False)
    assert learner.version == 4
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(learner.theta))


def test_diverging_tasks_do_not_put_nan_into_theta(tmp_path):
    config = _config(optimizer_config={"learning_rate": 50.0}, outer_steps=5, eval_every=5)
    trainer = MetaTrainer(config, tmp_path / "run", progress=False)
    learner = trainer.run()
    for leaf in jax.tree_util.tree_leaves(learner.theta):
        assert np.all(np.isfinite(np.asarray(leaf)))
    losses = _losses(tmp_path / "run")
    assert all(np.isfinite(losses)) and max(losses) == pytest.approx(2.0)  # clipped, counted


@pytest.mark.parametrize("field,value,match", [
    ("sigma", -0.1, "sigma must be positive"),
    ("estimator", "reinforce", "estimator 'reinforce' is unknown"),
    ("truncation", 500, "longer than the horizon"),
    ("families", ["flow"], "out-of-distribution"),
    ("families", ["nope"], "family 'nope' is unknown"),
    ("optimizer", "lion", "optimizer 'lion' is unknown"),
    ("pairs", 0, "pairs must be a positive integer"),
    ("train_only_fraction", 1.5, r"train_only_fraction must be in \[0, 1\]"),
    ("snapshot_every", -1, "snapshot_every must be an integer >= 0"),
])
def test_bad_config_values_fail_before_compute(field, value, match):
    with pytest.raises(ValueError, match=match):
        _config(**{field: value})


def test_missing_baseline_store_is_a_clear_error(tmp_path):
    config = _config(normalise="baselines", store=str(tmp_path / "empty-store"))
    with pytest.raises(ValueError, match="no tuned-Adam baselines"):
        MetaTrainer(config, tmp_path / "run", progress=False)


def test_config_file_and_unknown_fields(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('optimizer = "mlp"\nfamilies = ["mlp"]\nsigma = 0.02\n')
    config = MetaTrainConfig.from_file(path, outer_steps=7)
    assert config.sigma == 0.02 and config.outer_steps == 7 and config.optimizer == "mlp"
    path.write_text("sigmaa = 1\n")
    with pytest.raises(ValueError, match="unknown config field"):
        MetaTrainConfig.from_file(path)


def test_init_weights_starts_from_a_file_and_checks_sizes(tmp_path):
    from lopt.weights import save

    learned = LearnedAdam(learning_rate=1e-4)
    theta = jax.tree_util.tree_map(lambda a: a + 0.25, learned.init(jax.random.key(3)))
    save(tmp_path / "w.safetensors", theta, learned)
    trainer = MetaTrainer(_config(init_weights=str(tmp_path / "w.safetensors")),
                          tmp_path / "run", progress=False)
    for got, want in zip(jax.tree_util.tree_leaves(trainer.learner.theta),
                         jax.tree_util.tree_leaves(theta)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="does not exist"):
        _config(init_weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(Exception, match="hierarchical|architecture"):
        MetaTrainer(_config(optimizer="hierarchical", optimizer_config={},
                            init_weights=str(tmp_path / "w.safetensors")),
                    tmp_path / "run2", progress=False)


def test_init_weights_without_new_inputs_are_grafted_and_can_be_trained_alone(tmp_path):
    """A file meta-trained without ``alignment`` starts an ``alignment`` run with zero new
    weights (the same updates), and ``trainable`` then moves only those."""
    from lopt.optimizers import Hierarchical
    from lopt.weights import save

    old = Hierarchical()
    theta = old.init(jax.random.key(3))
    save(tmp_path / "w.safetensors", theta, old)
    config = _config(optimizer="hierarchical", optimizer_config={"alignment": True},
                     init_weights=str(tmp_path / "w.safetensors"), trainable=["align"],
                     pairs=2, truncation=5, horizon=20, min_length=10, outer_steps=2,
                     checkpoint_every=2, outer_lr=1e-2)
    trainer = MetaTrainer(config, tmp_path / "run", progress=False)
    assert not np.any(np.asarray(trainer.learner.theta["align"]["w"]))
    learned = trainer.run().theta
    assert np.any(np.asarray(learned["align"]["w"]))
    for key in theta:
        for a, b in zip(jax.tree_util.tree_leaves(theta[key]),
                        jax.tree_util.tree_leaves(learned[key])):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="trainable"):
        _config(trainable=[])


def test_a_warm_started_run_keeps_the_starting_card_when_the_file_changes(tmp_path):
    from lopt.weights import save

    learned = LearnedAdam(learning_rate=1e-4)
    path = tmp_path / "w.safetensors"
    save(path, learned.init(jax.random.key(3)), learned, provenance={"run": "old"})
    meta_train(_config(init_weights=str(path), outer_steps=1, checkpoint_every=1),
               tmp_path / "run", progress=False)
    save(path, learned.init(jax.random.key(4)), learned, provenance={"run": "new"})
    resume(tmp_path / "run", outer_steps=2, progress=False)  # the record is not rewritten
    record = json.loads((tmp_path / "run" / "init_card.json").read_text())
    assert record["weights"] == str(path)
    assert record["card"]["provenance"] == {"run": "old"}
    assert len(record["sha256"]) == 64

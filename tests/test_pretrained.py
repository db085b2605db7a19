"""The shipped optimizers: loadable by name, documented by their card, and they train."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt import pretrained
from lopt.cli import BENCHMARK_PER_FAMILY


def test_default_is_shipped_with_a_complete_card():
    assert pretrained.DEFAULT in pretrained.available()
    card = pretrained.card()
    assert card["architecture"] == "hierarchical"
    prov = card["provenance"]
    for key in ("task_set_version", "estimator", "outer_steps", "inner_steps", "wall_time_s",
                "machine", "commit", "selection_score"):
        assert key in prov, key
    assert prov["outer_steps"] > 0 and prov["inner_steps"] > 0


def _chains(prov, seen=()):
    """Every warm-start chain of a card's lineage (a soup branches into its ingredients)."""
    if "soup" in prov:
        for ingredient in prov["soup"]:
            yield from _chains(ingredient, seen)
        return
    seen = (*seen, prov.get("run"))
    if "started_from" in prov:
        yield from _chains(prov["started_from"], seen)
    else:
        yield seen


def test_shipped_lineage_has_no_run_twice_in_one_chain():
    # a run cannot be its own ancestor: it would mean a parent's card was read after a later
    # ship overwrote it (scripts/ship.py refuses that now)
    for chain in _chains(pretrained.card()["provenance"]):
        runs = [r for r in chain if r is not None]
        assert len(runs) == len(set(runs)), chain


def test_default_optimizer_trains_a_small_regression_without_settings():
    key_x, key_w = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (256, 8))
    y = x @ jax.random.normal(key_w, (8,))
    loss_fn = lambda p: jnp.mean((x @ p["w"] + p["b"] - y) ** 2)  # noqa: E731
    params = {"w": jnp.zeros(8), "b": jnp.zeros(())}
    opt = lopt.optimizer()
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(1000):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.2 * losses[0]


def test_unknown_name_and_ambiguous_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no shipped optimizer named 'nope'; shipped: "):
        lopt.optimizer("nope")
    with pytest.raises(ValueError, match="not both"):
        lopt.optimizer("hierarchical", weights=tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError):
        lopt.optimizer(weights=tmp_path / "x.safetensors")


@pytest.mark.parametrize("steps", [2000, 10000])
def test_shipped_baselines_match_their_tasks(steps):
    from lopt.evaluate import BaselineStore
    from lopt.tasks.taskset import get_task, sample_tasks

    store = BaselineStore(pretrained.BASELINES, num_steps=steps)
    ids = store.task_ids()
    # at least the benchmark's default sample (`lopt benchmark [--steps 10000]`)
    assert {t.id for t in sample_tasks("held_out", BENCHMARK_PER_FAMILY, subset="test")} <= set(ids)
    for task_id in ids:
        record = store.get(get_task(task_id))
        assert record is not None, f"{task_id}: stale fingerprint"  # the task changed
        assert record["baselines"]["adam_tuned"]["sweep"]["mean_loss"]

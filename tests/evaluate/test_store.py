"""The baseline store: round trip, staleness, atomic writes."""

import json

import pytest

from lopt import atomic as atomic_mod
from lopt.evaluate.store import BaselineStore, best_loss, initial_loss
from lopt.tasks import get_family

CONFIG = {"dataset": "wine", "hidden": [32], "activation": "tanh", "batch_size": 32,
          "train_fraction": 1.0, "init_kind": 1, "init_scale": 1.0}


def _record(best, initial=2.0):
    return {"initial_loss": initial, "best_loss": best, "mean_loss": best + 0.1,
            "sweep": {"best_loss": [best, best + 1]}}


def test_round_trip_and_merge(tmp_path):
    task = get_family("mlp").task(CONFIG)
    store = BaselineStore(tmp_path, num_steps=100)
    assert store.get(task) is None
    assert store.missing(task, ["adam_tuned", "sgdm_tuned"]) == ["adam_tuned", "sgdm_tuned"]
    store.put(task, {"adam_tuned": _record(0.5)}, seed=0)
    store.put(task, {"sgdm_tuned": _record(0.3)}, seed=0)
    record = store.get(task)
    assert set(record["baselines"]) == {"adam_tuned", "sgdm_tuned"}
    assert store.missing(task, ["adam_tuned", "sgdm_tuned", "nadamw_list"]) == ["nadamw_list"]
    assert best_loss(record) == 0.3 and initial_loss(record) == 2.0
    assert store.task_ids() == [task.id]
    # another training length is another store
    assert BaselineStore(tmp_path, num_steps=200).get(task) is None


def test_stale_record_is_ignored(tmp_path):
    task = get_family("mlp").task(CONFIG)
    store = BaselineStore(tmp_path, num_steps=100)
    store.put(task, {"adam_tuned": _record(0.5)}, seed=0)
    path = store.path(task.id)
    data = json.loads(path.read_text())
    data["fingerprint"] = "0" * 64
    path.write_text(json.dumps(data))
    assert store.get(task) is None


def test_interrupted_write_keeps_old_record(tmp_path, monkeypatch):
    task = get_family("mlp").task(CONFIG)
    store = BaselineStore(tmp_path, num_steps=100)
    store.put(task, {"adam_tuned": _record(0.5)}, seed=0)
    before = store.path(task.id).read_text()

    def crash(src, dst):
        raise KeyboardInterrupt("killed during write")

    monkeypatch.setattr(atomic_mod.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.put(task, {"sgdm_tuned": _record(0.1)}, seed=0)
    assert store.path(task.id).read_text() == before
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [store.path(task.id).name]


def test_corrupt_file_is_a_clear_error(tmp_path):
    task = get_family("mlp").task(CONFIG)
    store = BaselineStore(tmp_path, num_steps=100)
    store.path(task.id).parent.mkdir(parents=True)
    store.path(task.id).write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        store.get(task)


@pytest.mark.parametrize("steps", [0, -1, 1.5])
def test_rejects_bad_num_steps(tmp_path, steps):
    with pytest.raises(ValueError, match="num_steps"):
        BaselineStore(tmp_path, num_steps=steps)


def test_fallback_store_is_read_but_never_written(tmp_path):
    from lopt.tasks.taskset import sample_tasks

    task = sample_tasks("held_out", 1, families=["quadratic"])[0]
    shipped = BaselineStore(tmp_path / "shipped", num_steps=5)
    shipped.put(task, {"adam_tuned": {"best_loss": 1.0, "initial_loss": 2.0}}, seed=0)
    store = BaselineStore(tmp_path / "user", num_steps=5, fallback=tmp_path / "shipped")
    assert store.get(task)["baselines"]["adam_tuned"]["best_loss"] == 1.0
    assert store.missing(task, ["adam_tuned", "sgdm_tuned"]) == ["sgdm_tuned"]
    store.put(task, {"sgdm_tuned": {"best_loss": 0.5, "initial_loss": 2.0}}, seed=0)
    assert set(store.get(task)["baselines"]) == {"adam_tuned", "sgdm_tuned"}  # merged
    assert set(shipped.get(task)["baselines"]) == {"adam_tuned"}  # shipped file untouched

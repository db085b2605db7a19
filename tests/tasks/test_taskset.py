"""The task set: size, families, disjoint deterministic splits, stable ids."""

import hashlib
from collections import Counter

import jax
import numpy as np
import pytest

from lopt.tasks import OOD_FAMILIES, family_names, get_family
from lopt.tasks.taskset import FAMILY_COUNTS, GROUPS, get_task, group_of, task_set

# sha256 over "id group" lines of the whole task set, in order. Changing any family's sampling
# space, the seed or the split changes it: then bump TASK_SET_VERSION and update this value.
TASK_SET_SHA256 = '6d1d13d93615edfeb589ab95f129916aeeb68e319698eff54b8010c373e2fefc'


@pytest.fixture(scope="module")
def tasks():
    return task_set()


def test_at_least_a_thousand_tasks_from_ten_families(tasks):
    assert len(tasks) >= 1000
    assert len({t.family for t in tasks}) >= 10
    assert set(FAMILY_COUNTS) == set(family_names())


def test_ids_are_unique_and_content_addressed(tasks):
    assert len({t.id for t in tasks}) == len(tasks)
    for t in tasks[::97]:
        assert t.id == f"{t.family}/{t.fingerprint()[:10]}"
        assert get_family(t.family).task(t.config).id == t.id


def test_groups_are_disjoint_and_cover_everything(tasks):
    groups = {g: {t.id for t in task_set(g)} for g in GROUPS}
    assert sum(len(v) for v in groups.values()) == len(tasks)
    assert not (groups["meta_train"] & groups["held_out"])
    counts = Counter(t.group for t in tasks)
    assert 0.1 < counts["held_out"] / (counts["held_out"] + counts["meta_train"]) < 0.3
    ood_families = {t.family for t in task_set("ood")}
    assert ood_families == set(OOD_FAMILIES) and len(ood_families) >= 2
    assert not ood_families & {t.family for t in task_set("meta_train")}
    # every in-distribution family has held-out tasks
    assert {t.family for t in task_set("held_out")} == set(family_names()) - set(OOD_FAMILIES)


def test_ids_are_stable(tasks):
    blob = "\n".join(f"{t.id} {t.group}" for t in tasks).encode()
    digest = hashlib.sha256(blob).hexdigest()
    if TASK_SET_SHA256 is None:
        pytest.fail(f"record the task set hash: TASK_SET_SHA256 = {digest!r}")
    assert digest == TASK_SET_SHA256


def test_group_is_a_function_of_the_id():
    assert group_of("mlp/0000000000", "mlp") == group_of("mlp/0000000000", "mlp")
    assert group_of("flow/abc", "flow") == "ood"


def test_get_task_and_its_errors(tasks):
    t = tasks[5]
    assert get_task(t.id) is t
    with pytest.raises(ValueError, match="unknown task id 'nope/123'.*families"):
        get_task("nope/123")
    with pytest.raises(ValueError, match="did you mean"):
        get_task(t.id[:-1] + ("0" if t.id[-1] != "0" else "1"))
    with pytest.raises(ValueError, match="unknown task family 'cnn'"):
        task_set(families=["cnn"])
    with pytest.raises(ValueError, match="unknown task group"):
        task_set("train")


def _write_idx(path, array):
    import struct

    array = np.asarray(array, np.uint8)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def test_a_data_folder_adds_real_data_tasks(tmp_path, monkeypatch):
    import optax

    import lopt
    from lopt.tasks.taskset import REAL_DATA_COUNTS, real_data_tasks

    monkeypatch.delenv("LOPT_DATA_DIR", raising=False)
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    for prefix, n in (("train", 300), ("t10k", 60)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    base = task_set(families=["mlp"])
    extended = task_set(families=["mlp"], data_dir=tmp_path)
    extra = extended[len(base):]
    assert extended[: len(base)] == base and len(extra) == REAL_DATA_COUNTS["mlp"]
    assert {t.config["dataset"] for t in extra} == {"mnist"}
    assert [t.id for t in extra] == [t.id for t in real_data_tasks(tmp_path)
                                     if t.family == "mlp"]  # ids are stable
    task = extra[0]
    assert task.data["train"]["x"].shape[1] == 784
    r = lopt.train(task, optax.adam(1e-3), 20, jax.random.key(0), eval_splits=("train",))
    assert np.isfinite(float(r.eval_loss["train"][-1]))
    conv = [t for t in real_data_tasks(tmp_path) if t.family == "conv2d"]
    assert len(conv) == REAL_DATA_COUNTS["conv2d"]
    assert conv[0].spec.input_shape == (28, 28, 1)
    params = conv[0].init(jax.random.key(0))
    assert np.isfinite(float(conv[0].loss(params, conv[0].batch("train", jax.random.key(1)),
                                          jax.random.key(2))))
    with pytest.raises(ValueError, match="nope"):
        task_set(families=["mlp"], data_dir=tmp_path / "nope")


def test_task_content_is_stable():
    """Same id, same data: the digits training split of a fixed task hashes to a recorded value
    (rounded to 3 decimals, so BLAS-level float differences do not matter)."""
    task = get_task("mlp/2adb65bca3")
    assert task.config["dataset"] == "digits"
    x = np.round(np.asarray(task.data["train"]["x"]), 3)
    y = np.asarray(task.data["train"]["y"])
    digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    assert digest == "9008cbcb6cb1d230c63957db14d2b0b19bc2f366a1cb3c980769ca4936159d98"


def test_held_out_splits_once_into_selection_and_test():
    from lopt.tasks.taskset import SUBSETS, subset_of

    held = task_set("held_out")
    parts = {s: task_set("held_out", subset=s) for s in SUBSETS}
    ids = {s: {t.id for t in ts} for s, ts in parts.items()}
    assert not ids["selection"] & ids["test"]
    assert ids["selection"] | ids["test"] == {t.id for t in held}
    assert 0.2 < len(ids["selection"]) / len(held) < 0.4
    assert {t.family for t in parts["test"]} == {t.family for t in held}
    assert all(subset_of(t.id) == "test" for t in parts["test"])
    with pytest.raises(ValueError, match="splits the held_out group"):
        task_set("meta_train", subset="test")
    with pytest.raises(ValueError, match="unknown held-out subset"):
        task_set("held_out", subset="dev")

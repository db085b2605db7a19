"""The task set: size, families, disjoint deterministic splits, stable ids."""

import hashlib
from collections import Counter

import pytest

from lopt.tasks import OOD_FAMILIES, family_names, get_family
from lopt.tasks.taskset import FAMILY_COUNTS, GROUPS, get_task, group_of, task_set

# sha256 over "id group" lines of the whole task set, in order. Changing any family's sampling
# space, the seed or the split changes it: then bump TASK_SET_VERSION and update this value.
TASK_SET_SHA256 = None


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

"""scripts/compare.py: paired comparison of two benchmark reports of the same tasks."""

import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "compare", Path(__file__).parents[2] / "scripts" / "compare.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


def _report(path, scores, wins):
    tasks = [{"task_id": f"{fam}/{i}", "family": fam, "normalised": s, "win_tuned": w}
             for i, ((fam, s), w) in enumerate(zip(scores, wins))]
    path.mkdir()
    (path / "results.json").write_text(json.dumps({"modes": {"valid": {"tasks": tasks}}}))
    return path


def test_compare_gives_paired_differences_counts_and_wins(tmp_path):
    fams = ["mlp", "mlp", "mlp", "vae"]
    old = _report(tmp_path / "old", list(zip(fams, [0.10, 0.20, 0.30, 0.40])),
                  [False, True, False, True])
    new = _report(tmp_path / "new", list(zip(fams, [0.05, 0.15, 0.35, 0.40])),
                  [True, True, False, True])
    result = compare.compare(compare.load_report(old), compare.load_report(new))
    assert set(result) == {"valid"}
    whole = result["valid"]["all"]
    assert whole["difference"] == pytest.approx((-0.05 - 0.05 + 0.05 + 0.0) / 4)
    assert (whole["candidate_better"], whole["incumbent_better"]) == (2, 1)
    assert whole["wins_tuned"] == [2, 3]
    low, high = whole["interval"]
    assert low <= whole["difference"] <= high
    mlp = result["valid"]["by_family"]["mlp"]
    assert mlp["tasks"] == 3 and mlp["candidate"] == pytest.approx(0.55 / 3)
    assert "| mlp | 3 |" in compare.markdown(result, "old", "new")


def test_compare_refuses_reports_of_different_tasks(tmp_path):
    old = _report(tmp_path / "old", [("mlp", 0.1), ("mlp", 0.2)], [True, False])
    new = _report(tmp_path / "new", [("mlp", 0.1)], [True])
    with pytest.raises(ValueError, match="different tasks"):
        compare.compare(compare.load_report(old), compare.load_report(new))

"""scripts/ship.py: the cost of a model's whole lineage, soups and warm starts included."""

import importlib.util
import json
from pathlib import Path

import jax
import pytest

import lopt
from lopt.optimizers import LearnedAdam

_spec = importlib.util.spec_from_file_location(
    "ship", Path(__file__).parents[2] / "scripts" / "ship.py")
ship = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ship)


def _run(name, steps, inner, seconds, estimator, parent=None):
    prov = {"run": name, "outer_steps": steps, "inner_steps": inner, "wall_time_s": seconds,
            "estimator": estimator}
    return {**prov, "started_from": parent} if parent else prov


def _soup_card():
    """A soup of c@290 (from a@560) and e@300 (from d@350, from c@680, from a@560)."""
    a = _run("a", 560, 1000, 10, "pes")
    c290 = _run("c", 290, 200, 20, "pes", a)
    e300 = _run("e", 300, 300, 30, "tbptt",
                _run("d", 350, 400, 40, "tbptt", _run("c", 680, 500, 50, "pes", a)))
    # a soup's top level holds its ingredients' total cost (scripts/soup.py)
    return {"outer_steps": 1890, "inner_steps": 2200, "wall_time_s": 150, "estimator": "pes+tbptt",
            "soup": [{"coefficient": 0.3, **c290}, {"coefficient": 0.7, **e300}]}


def test_lineage_cost_counts_each_run_once_through_soups():
    f = _run("f", 100, 600, 60, "tbptt", {"weights": "soup.safetensors", **_soup_card()})
    cost = ship.lineage_cost([f])
    # a@560, c up to 680 (the furthest step used), d@350, e@300, f@100; the soup itself adds
    # nothing and a is not counted twice
    assert cost["outer_steps"] == 560 + 680 + 350 + 300 + 100
    assert cost["inner_steps"] == 1000 + 500 + 400 + 300 + 600
    assert cost["wall_time_s"] == 10 + 50 + 40 + 30 + 60
    assert cost["estimator"] == "tbptt+pes"


def test_a_run_started_from_a_soup_keeps_the_soups_lineage(tmp_path):
    arch = LearnedAdam()
    path = tmp_path / "soup.safetensors"  # outside any run folder
    lopt.save(path, arch.init(jax.random.key(0)), arch, provenance=_soup_card())
    parent = ship._parent(str(path))["started_from"]
    assert parent["weights"] == str(path)
    assert [s["run"] for s in parent["soup"]] == ["c", "e"]
    assert ship.lineage_cost([parent])["outer_steps"] == 560 + 680 + 350 + 300


def test_a_run_started_from_a_shipped_file_is_refused():
    # shipping overwrites src/lopt/pretrained/*.safetensors, so its card could be a later one's
    with pytest.raises(ValueError, match="shipped file"):
        ship._parent(str(ship.FOLDER / "hierarchical.safetensors"))


def test_a_run_that_recorded_its_starting_card_may_start_from_a_shipped_file(tmp_path):
    shipped = str(ship.FOLDER / "hierarchical.safetensors")
    record = {"weights": shipped, "sha256": "0" * 64, "card": {"provenance": _soup_card()}}
    (tmp_path / "init_card.json").write_text(json.dumps(record))
    parent = ship._parent(shipped, tmp_path)["started_from"]
    # the recorded card, not the one the shipped file holds now
    assert [s["run"] for s in parent["soup"]] == ["c", "e"]
    # a record of another file does not count
    record["weights"] = "other.safetensors"
    (tmp_path / "init_card.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="shipped file"):
        ship._parent(shipped, tmp_path)


def test_settings_replace_config_fields_and_refuse_unknown_ones():
    import argparse

    assert ship.parse_setting("adapt_rate=0.05") == ("adapt_rate", 0.05)
    assert ship.parse_setting("alignment=true") == ("alignment", True)
    for bad in ("adapt_rate", "=1", "adapt_rate=fast"):
        with pytest.raises(argparse.ArgumentTypeError):
            ship.parse_setting(bad)
    learned = lopt.Hierarchical()
    assert ship.configured(learned, {"adapt_rate": 0.05}).adapt_rate == 0.05
    assert learned.adapt_rate == 0.0
    with pytest.raises(SystemExit, match="no config field adapt_speed"):
        ship.configured(learned, {"adapt_speed": 0.05})

"""Weights files: round trip, model card, clear errors, atomic writes."""

import json

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

import lopt
from lopt import atomic
from lopt.optimizers import Hierarchical, LearnedAdam, PerParameterMLP


@pytest.mark.parametrize("arch", [Hierarchical(), PerParameterMLP(ffn_hidden=(8, 8)),
                                  LearnedAdam(learning_rate=3e-3)])
def test_round_trip_with_model_card(tmp_path, arch):
    theta = jax.tree_util.tree_map(lambda a: a + 0.5, arch.init(jax.random.key(1)))
    path = tmp_path / "w.safetensors"
    lopt.save(path, theta, arch, provenance={"outer_steps": 12})
    loaded, arch2, card = lopt.load(path)
    assert arch2 == arch
    assert card["architecture"] == arch.name and card["provenance"] == {"outer_steps": 12}
    assert card["lopt_version"] == lopt.__version__
    for a, b in zip(jax.tree_util.tree_leaves(theta), jax.tree_util.tree_leaves(loaded)):
        np.testing.assert_array_equal(a, b)
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(theta)


def test_mismatched_shapes_are_a_clear_error(tmp_path):
    small, big = PerParameterMLP(ffn_hidden=(8, 8)), PerParameterMLP()
    with pytest.raises(lopt.WeightsError, match="do not match"):
        lopt.save(tmp_path / "x.safetensors", small.init(jax.random.key(0)), big)
    # a file whose tensors disagree with its own card
    path = tmp_path / "bad.safetensors"
    flat = {"ffn.0.w": np.zeros((3, 3), np.float32)}
    card = {"format": 1, "architecture": "mlp", "config": big.config(), "provenance": {}}
    save_file(flat, str(path), metadata={"lopt": json.dumps(card)})
    with pytest.raises(lopt.WeightsError, match="missing"):
        lopt.load(path)


def test_wrong_architecture_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "adam.safetensors"
    lopt.save(path, LearnedAdam().init(), LearnedAdam())
    with pytest.raises(lopt.WeightsError, match="expected 'hierarchical'"):
        lopt.load(path, architecture="hierarchical")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(lopt.WeightsError, match="truncated"):
        lopt.load(tmp_path / "cut.safetensors")
    save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(lopt.WeightsError, match="no lopt model card"):
        lopt.load(tmp_path / "plain.safetensors")
    with pytest.raises(FileNotFoundError):
        lopt.load(tmp_path / "nope.safetensors")
    with pytest.raises(TypeError, match="LearnedOptimizer"):
        lopt.save(tmp_path / "y.safetensors", {}, "adam")


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    lopt.save(path, LearnedAdam().init(), LearnedAdam())
    before = path.read_bytes()
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError("kill")))
    with pytest.raises(OSError):
        lopt.save(path, LearnedAdam(learning_rate=1.0).init(), LearnedAdam(learning_rate=1.0))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]

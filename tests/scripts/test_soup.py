"""scripts/soup.py: the weighted average of weights files, refused across architectures."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest

import lopt
from lopt.optimizers import Hierarchical, LearnedAdam

_spec = importlib.util.spec_from_file_location(
    "soup", Path(__file__).parents[2] / "scripts" / "soup.py")
soup = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soup)


def test_soup_is_the_weighted_average_with_both_cards(tmp_path):
    arch = LearnedAdam()
    paths = []
    for i in range(2):
        theta = jax.tree_util.tree_map(lambda x, i=i: x + i + 1.0, arch.init(jax.random.key(i)))
        paths.append(tmp_path / f"{i}.safetensors")
        lopt.save(paths[-1], theta, arch, provenance={"run": f"run{i}"})
    theta, learned, prov = soup.soup(paths, [0.25, 0.75])
    a, b = (lopt.load(p)[0] for p in paths)
    assert learned == arch
    for x, y, z in zip(*(jax.tree_util.tree_leaves(t) for t in (a, b, theta))):
        np.testing.assert_allclose(z, 0.25 * np.asarray(x) + 0.75 * np.asarray(y), rtol=1e-6)
    assert [s["run"] for s in prov["soup"]] == ["run0", "run1"]
    assert [s["coefficient"] for s in prov["soup"]] == [0.25, 0.75]


def test_soup_refuses_other_architectures_and_bad_coefficients(tmp_path):
    for name, arch in (("a", LearnedAdam()), ("h", Hierarchical())):
        lopt.save(tmp_path / f"{name}.safetensors", arch.init(jax.random.key(0)), arch)
    with pytest.raises(ValueError, match="only one architecture"):
        soup.soup([tmp_path / "a.safetensors", tmp_path / "h.safetensors"], [0.5, 0.5])
    with pytest.raises(ValueError, match="sum to 1"):
        soup.soup([tmp_path / "a.safetensors", tmp_path / "a.safetensors"], [0.5, 0.6])

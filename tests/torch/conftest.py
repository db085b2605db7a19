import jax
import numpy as np
import pytest

import lopt
from lopt.optimizers import Hierarchical, LearnedAdam, PerParameterMLP
from lopt.optimizers.hierarchical import ADAM_LIKE_CHANNEL

ARCHS = {"hierarchical": Hierarchical(), "mlp": PerParameterMLP(), "learned_adam": LearnedAdam()}


def random_theta(arch, seed=0):
    """Random meta-parameters, drawn with NumPy (an eager JAX init compiles for seconds):
    matrices N(0, 1/fan-in), other arrays N(0, 0.01); the skip starts at its initial -1 on the
    Adam-like channel and learned Adam at its initial hyperparameters, plus noise."""
    rng = np.random.default_rng(seed)

    def draw(shape):
        x = rng.normal(size=shape.shape)
        x = x / np.sqrt(shape.shape[0]) if len(shape.shape) == 2 else 0.1 * x
        return x.astype(np.float32)

    if isinstance(arch, LearnedAdam):
        return {k: np.float32(v) + draw(v) for k, v in arch.init().items()}
    theta = jax.tree_util.tree_map(draw, jax.eval_shape(lambda: arch.init(jax.random.key(0))))
    theta["skip"][ADAM_LIKE_CHANNEL] -= 1.0
    return theta


@pytest.fixture(scope="session")
def weights_files(tmp_path_factory):
    """``{architecture: (arch, theta, path)}``: random weights of each architecture on disk."""
    folder = tmp_path_factory.mktemp("weights")
    out = {}
    for name, arch in ARCHS.items():
        theta = random_theta(arch)
        lopt.save(folder / f"{name}.safetensors", theta, arch)
        out[name] = (arch, theta, folder / f"{name}.safetensors")
    return out

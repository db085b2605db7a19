"""The inner unroll: rematerialised steps change memory, not the gradient."""

import jax
import jax.numpy as jnp
import numpy as np

from lopt.meta import unroll as U
from lopt.meta.config import MetaTrainConfig
from lopt.meta.trainer import select_tasks
from lopt.meta.worker import build_pools
from lopt.optimizers import LearnedAdam


def test_remat_gives_the_same_meta_gradient():
    config = MetaTrainConfig.from_dict(dict(
        families=["regression"], num_pools=1, max_tasks_per_pool=2, truncation=10, horizon=100,
        min_length=20))
    tasks = select_tasks(config, step=0)[0]
    pool, _ = build_pools(tasks, {t.id: (2.0, 0.0) for t in tasks}, 1)[0]
    learned = LearnedAdam()
    theta = learned.init(jax.random.key(0))
    state = U.new_run(pool, lambda: learned.optimizer(theta), jax.random.key(1), min_length=20,
                      horizon=100)

    def meta_loss(th, remat):
        _, meta, _, _ = U.unroll(pool, lambda: learned.optimizer(th), state, 10, remat=remat)
        return jnp.mean(meta)

    plain = jax.jit(jax.grad(lambda th: meta_loss(th, False)))(theta)
    remat = jax.jit(jax.grad(lambda th: meta_loss(th, True)))(theta)
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(remat)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-8)
    assert any(np.abs(np.asarray(a)).max() > 0 for a in jax.tree_util.tree_leaves(plain))

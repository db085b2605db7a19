"""The worker: pools running concurrently give exactly what they give one after another."""

import jax
import numpy as np

from lopt.meta.config import MetaTrainConfig
from lopt.meta.trainer import select_tasks
from lopt.meta.worker import UnrollConfig, Worker, build_pools
from lopt.optimizers import LearnedAdam


def _pools():
    config = MetaTrainConfig.from_dict(dict(
        optimizer="learned_adam", families=["quadratic", "test_function"], num_pools=2,
        pairs=2, max_tasks_per_pool=4, truncation=10, horizon=100, min_length=20))
    pools = []
    for tasks in select_tasks(config, step=0):
        pools += build_pools(tasks, {t.id: (2.0, 0.0) for t in tasks}, 2)
    return pools


def _run(threads):
    learned = LearnedAdam()
    theta = learned.init(jax.random.key(0))
    worker = Worker(learned, _pools(), UnrollConfig(truncation=10, horizon=100, min_length=20),
                    threads=threads)
    estimates = [worker.estimate(theta, v) for v in range(3)]
    return estimates, worker


def test_threaded_pools_match_sequential_pools_exactly():
    (seq, w1), (par, w2) = _run(1), _run(2)
    assert w1._executor is None and w2._executor is not None
    for a, b in zip(seq, par):
        for x, y in zip(jax.tree_util.tree_leaves(a.grad), jax.tree_util.tree_leaves(b.grad)):
            np.testing.assert_array_equal(x, y)
        assert {k: v for k, v in a.metrics.items() if k.startswith("meta_loss")} == \
            {k: v for k, v in b.metrics.items() if k.startswith("meta_loss")}
    for x, y in zip(jax.tree_util.tree_leaves(w1.states), jax.tree_util.tree_leaves(w2.states)):
        np.testing.assert_array_equal(_plain(x), _plain(y))
    assert {k for k in par[0].metrics if k.startswith("seconds/")} == \
        {"seconds/quadratic", "seconds/test_function"}
    assert all(v > 0 for k, v in par[0].metrics.items() if k.startswith("seconds/"))
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree_util.tree_leaves(seq[-1].grad))


def _plain(x):
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x

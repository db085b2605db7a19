"""The inner unroll: rematerialised steps change memory, not the gradient; train-only runs; a
run's first unroll builds its optimizer state from the unroll's own meta-parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.meta import unroll as U
from lopt.meta.config import MetaTrainConfig
from lopt.meta.trainer import select_tasks
from lopt.meta.worker import build_pools
from lopt.optimizers import Hierarchical, LearnedAdam, PerParameterMLP


def _regression_run(learned):
    """A pool of two regression tasks, initial ``theta`` of ``learned`` and a fresh run."""
    config = MetaTrainConfig.from_dict(dict(
        families=["regression"], num_pools=1, max_tasks_per_pool=2, truncation=10, horizon=100,
        min_length=20))
    tasks = select_tasks(config, step=0)[0]
    pool, _ = build_pools(tasks, {t.id: (2.0, 0.0) for t in tasks}, 1)[0]
    theta = learned.init(jax.random.key(0))
    state = U.new_run(pool, lambda: learned.optimizer(theta), jax.random.key(1), min_length=20,
                      horizon=100)
    return pool, theta, state


def test_remat_gives_the_same_meta_gradient():
    learned = LearnedAdam()
    pool, theta, state = _regression_run(learned)

    def meta_loss(th, remat):
        _, meta, _, _ = U.unroll(pool, lambda: learned.optimizer(th), state, 10, remat=remat)
        return jnp.mean(meta)

    plain = jax.jit(jax.grad(lambda th: meta_loss(th, False)))(theta)
    remat = jax.jit(jax.grad(lambda th: meta_loss(th, True)))(theta)
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(remat)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-8)
    assert any(np.abs(np.asarray(a)).max() > 0 for a in jax.tree_util.tree_leaves(plain))


def test_feeds_valid_draws_the_share_of_train_only_runs_per_run():
    keys = jax.random.split(jax.random.key(0), 4000)
    for fraction in (0.0, 0.3, 1.0):
        fed = np.asarray(jax.vmap(lambda k: U.feeds_valid(k, fraction))(keys))
        assert abs((1 - fed.mean()) - fraction) < 0.03
    # a run's kind depends on its key alone, so it holds across truncations
    assert bool(U.feeds_valid(keys[7], 0.5)) == bool(U.feeds_valid(keys[7], 0.5))


def test_train_only_runs_get_no_validation_loss():
    learned = PerParameterMLP()
    pool, theta, state = _regression_run(learned)

    def without_valid():
        opt = learned.optimizer(theta)
        return optax.GradientTransformationExtraArgs(
            opt.init, lambda u, s, p=None, *, valid_loss=None, **kw: opt.update(u, s, p, **kw))

    def final_params(make_opt, fraction):
        out, _, _, _ = U.unroll(pool, make_opt, state, 10, train_only_fraction=fraction)
        return jax.tree_util.tree_leaves(out.params)

    fed = final_params(lambda: learned.optimizer(theta), 0.0)
    train_only = final_params(lambda: learned.optimizer(theta), 1.0)
    reference = final_params(without_valid, 0.0)
    for a, b in zip(train_only, reference):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(fed, train_only))


def test_initial_state_meta_parameters_get_a_gradient_at_a_run_start():
    # The hierarchical optimizer's LSTM starts from theta["lstm_init"]; reset builds that state
    # outside the unroll, so the unroll must rebuild it for the gradient to reach it.
    learned = Hierarchical(lstm_size=8, ffn_hidden=(8, 8), feedback_size=4, pool_size=4)
    pool, theta, state = _regression_run(learned)
    stale = learned.init(jax.random.key(5))  # reset ran with another outer step's theta
    state = state._replace(opt_state=learned.optimizer(stale).init(state.params))

    def grad_at(start):
        def meta_loss(th):
            _, meta, _, _ = U.unroll(pool, lambda: learned.optimizer(th), start, 5)
            return jnp.mean(meta)
        return jax.jit(jax.grad(meta_loss))(theta)

    fresh = grad_at(state)
    assert np.abs(np.asarray(fresh["lstm_init"]["h"])).max() > 0
    assert np.abs(np.asarray(fresh["lstm_init"]["c"])).max() > 0
    # Mid-run the state carries over: the initial state's parameters play no part.
    later, _, _, _ = U.unroll(pool, lambda: learned.optimizer(theta), state, 5)
    mid = grad_at(later)
    assert np.abs(np.asarray(mid["lstm_init"]["h"])).max() == 0
    assert np.abs(np.asarray(mid["lstm"]["w"])).max() > 0

"""Properties every learned optimizer must have (hierarchical and per-parameter MLP)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.optimizers import Hierarchical, LearnedAdam, PerParameterMLP

ARCHS = [Hierarchical(), PerParameterMLP()]
IDS = ["hierarchical", "mlp"]


def _params(key, dtype=jnp.float32):
    k = jax.random.split(key, 4)
    return {
        "scalar": jnp.asarray(0.3, dtype),
        "bias": jax.random.normal(k[0], (7,), dtype),
        "w": jax.random.normal(k[1], (5, 6), dtype),
        "conv": jax.random.normal(k[2], (3, 3, 2, 4), dtype),
        "empty": jnp.zeros((0, 3), dtype),
    }


def _grads(key, params, scale=1.0):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return tree.unflatten([scale * jax.random.normal(k, p.shape, p.dtype)
                           for k, p in zip(keys, leaves)])


@functools.partial(jax.jit, static_argnums=0)
def _update(arch, theta, grads, state, params, loss, valid=None):
    """One update, compiled once per architecture and parameter structure (theta traced)."""
    kw = {} if valid is None else {"valid_loss": valid}
    return arch.optimizer(theta).update(grads, state, params, value=loss, **kw)


def _updates_at(arch, theta, params, grad_list):
    """The updates of ``grad_list`` in turn at fixed ``params`` (training loss 1), and the last
    state: the rule's own response, with the parameters held still."""
    state, ups = arch.optimizer(theta).init(params), []
    for g in grad_list:
        u, state = _update(arch, theta, g, state, params, 1.0)
        ups.append(u)
    return ups, state


def _run(arch, params, grad_list, losses, valid=None):
    theta = arch.init(jax.random.key(0))
    state = arch.optimizer(theta).init(params)
    ups = []
    for t, (g, loss) in enumerate(zip(grad_list, losses)):
        u, state = _update(arch, theta, g, state, params, loss,
                           None if valid is None else valid[t])
        params = optax.apply_updates(params, u)
        ups.append(u)
    return ups, state


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_update_is_permutation_equivariant(arch):
    params = {"w": jax.random.normal(jax.random.key(1), (6, 5)), "b": jnp.ones((5,))}
    grads = [_grads(jax.random.key(i), params) for i in range(3)]
    perm = np.random.default_rng(0).permutation(30)

    def permute(tree):
        return {"w": tree["w"].reshape(-1)[perm].reshape(6, 5), "b": tree["b"]}

    ups, _ = _run(arch, params, grads, [1.0, 0.9, 0.8])
    ups_p, _ = _run(arch, permute(params), [permute(g) for g in grads], [1.0, 0.9, 0.8])
    for u, up in zip(ups, ups_p):
        np.testing.assert_allclose(permute(u)["w"], up["w"], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(u["b"], up["b"], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_validation_loss_changes_the_update(arch):
    params = _params(jax.random.key(1))
    grads = [_grads(jax.random.key(i), params) for i in range(4)]
    losses = [2.0, 1.5, 1.2, 1.0]
    without, _ = _run(arch, params, grads, losses)
    low, _ = _run(arch, params, grads, losses, valid=[2.0, 1.6, 1.3, 1.1])
    high, _ = _run(arch, params, grads, losses, valid=[2.0, 3.0, 4.0, 5.0])
    diff = lambda a, b: max(float(jnp.abs(x - y).max())  # noqa: E731
                            for x, y in zip(jax.tree_util.tree_leaves(a),
                                            jax.tree_util.tree_leaves(b)) if x.size)
    assert diff(low[-1], high[-1]) > 0
    assert diff(without[-1], high[-1]) > 0
    for leaf in jax.tree_util.tree_leaves(without[-1]):
        assert jnp.all(jnp.isfinite(leaf))


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
@pytest.mark.parametrize("scale", [1e-10, 1.0, 1e10, 0.0])
def test_extreme_gradient_scales_stay_finite(arch, scale):
    theta = arch.init(jax.random.key(0))
    params = _params(jax.random.key(1))
    state = arch.optimizer(theta).init(params)
    for t in range(3):
        u, state = _update(arch, theta, _grads(jax.random.key(t), params, scale), state, params,
                           1.0)
        for leaf in jax.tree_util.tree_leaves((u, state)):
            assert jnp.all(jnp.isfinite(leaf)), (scale, t)
        assert float(jnp.abs(u["w"]).max()) < 1.0  # updates are small steps, not blow-ups


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_one_nan_element_does_not_poison_the_state(arch):
    theta = arch.init(jax.random.key(0))
    params = _params(jax.random.key(1))
    state = arch.optimizer(theta).init(params)
    g = _grads(jax.random.key(2), params)
    g["w"] = g["w"].at[2, 3].set(jnp.nan)
    u, state = _update(arch, theta, g, state, params, jnp.nan)
    mask = np.ones((5, 6), bool)
    mask[2, 3] = False
    assert np.all(np.isfinite(np.asarray(u["w"])[mask]))
    for name in ("bias", "conv", "scalar"):
        assert jnp.all(jnp.isfinite(u[name]))
    for leaf in jax.tree_util.tree_leaves(state):
        assert jnp.all(jnp.isfinite(leaf))
    u, state = _update(arch, theta, _grads(jax.random.key(3), params), state, params, 1.0)
    for leaf in jax.tree_util.tree_leaves((u, state)):
        assert jnp.all(jnp.isfinite(leaf))


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_state_is_stable_and_dtypes_follow_params(arch, dtype):
    theta = arch.init(jax.random.key(0))
    params = _params(jax.random.key(1), dtype)
    state0 = arch.optimizer(theta).init(params)
    state = state0
    for t in range(3):
        u, state = _update(arch, theta, _grads(jax.random.key(t), params), state, params,
                           1.0 / (t + 1))
        assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(state0)
        for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(state0)):
            assert a.shape == b.shape and a.dtype == b.dtype
        for name, p in params.items():
            assert u[name].shape == p.shape and u[name].dtype == p.dtype
    assert u["empty"].shape == (0, 3)
    assert float(jnp.abs(u["scalar"].astype(jnp.float32))) > 0


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_chain_vmap_and_no_recompile_on_loss(arch):
    theta = arch.init(jax.random.key(0))
    opt = optax.chain(optax.clip_by_global_norm(1.0), arch.optimizer(theta))
    params = {"w": jnp.ones((4, 3))}
    state = opt.init(params)
    traces = []

    @jax.jit
    def step(g, state, loss):
        traces.append(1)
        return opt.update(g, state, params, value=loss)

    for loss in (1.0, 0.5, 0.25):
        u, state = step({"w": jnp.full((4, 3), loss)}, state, jnp.float32(loss))
    assert len(traces) == 1

    # vmap over meta-parameters (what ES does): two thetas give two different updates
    thetas = jax.tree_util.tree_map(lambda a: jnp.stack([a, a * 1.5]), theta)

    def one(th):
        o = arch.optimizer(th)
        return o.update({"w": jnp.ones((4, 3))}, o.init(params), params, value=1.0)[0]["w"]

    out = jax.vmap(one)(thetas)
    assert out.shape == (2, 4, 3) and not jnp.allclose(out[0], out[1])


def test_learned_adam_equals_optax_adam():
    arch = LearnedAdam(learning_rate=3e-3, b1=0.8, b2=0.99, eps=1e-6)
    ours, ref = arch.optimizer(arch.init()), optax.adam(3e-3, b1=0.8, b2=0.99, eps=1e-6)
    params = _params(jax.random.key(1))
    s1, s2 = ours.init(params), ref.init(params)
    for t in range(5):
        g = _grads(jax.random.key(t), params)
        u1, s1 = ours.update(g, s1, params, value=1.0)
        u2, s2 = ref.update(g, s2, params)
        for a, b in zip(jax.tree_util.tree_leaves(u1), jax.tree_util.tree_leaves(u2)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-8)
    hp = LearnedAdam.hyperparameters(arch.init())
    assert float(hp["b1"]) == pytest.approx(0.8, rel=1e-6)


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_untrained_optimizer_is_a_sane_rule(arch):
    """At its initial theta the optimizer descends a quadratic instead of diverging."""
    opt = arch.optimizer(arch.init(jax.random.key(0)))
    target = jax.random.normal(jax.random.key(5), (20,))
    loss_fn = lambda p: 0.5 * jnp.sum((p["x"] - target) ** 2)  # noqa: E731
    params = {"x": jnp.zeros(20)}
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, g = jax.value_and_grad(loss_fn)(params)
        u, state = opt.update(g, state, params, value=loss)
        return optax.apply_updates(params, u), state, loss

    first = float(loss_fn(params))
    for _ in range(300):
        params, state, loss = step(params, state)
    assert float(loss_fn(params)) < 0.8 * first


def _largest_steps(arch, scales):
    """The largest update element at each step of a run on gradients scaled by ``scales``
    (random directions; a 100x100 tensor covers the chunked path)."""
    opt = arch.optimizer(arch.init(jax.random.key(0)))
    params = {"w": jax.random.normal(jax.random.key(1), (100, 100)), "b": jnp.zeros(10)}

    def step(carry, xs):
        params, state = carry
        scale, key = xs
        g = jax.tree_util.tree_map(lambda x: x * scale, _grads(key, params))
        u, state = opt.update(g, state, params, value=scale)
        return (optax.apply_updates(params, u), state), optax.tree.norm(u, ord="inf")

    keys = jax.random.split(jax.random.key(2), len(scales))
    return np.asarray(jax.jit(lambda p: jax.lax.scan(
        step, (p, opt.init(p)), (scales, keys))[1])(params))


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_vanished_gradient_stops_the_parameters(arch):
    """After a loss of exactly zero (gradients all zero) the steps die out, as Adam's do,
    instead of drifting on normalised features; the large tensor covers the chunked path."""
    largest = _largest_steps(arch, jnp.concatenate([jnp.ones(20), jnp.zeros(300)]))
    assert largest[:20].min() > 1e-4  # a real step while there is a gradient
    assert largest[-20:].max() < 1e-3 * largest[:20].min()


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_collapsed_gradient_stops_the_parameters(arch):
    """A gradient that collapses a millionfold without vanishing (a model whose loss has reached
    zero): the steps shrink in proportion, where the normalised features alone would keep them
    at full size and grow the weights without end; before the collapse nothing changes."""
    scales = jnp.concatenate([jnp.ones(200), jnp.full(300, 1e-6)])
    guarded = _largest_steps(arch, scales)
    unguarded = _largest_steps(dataclasses.replace(arch, collapse_ratio=1e-12), scales)
    np.testing.assert_allclose(guarded[:200], unguarded[:200], rtol=1e-5)
    assert unguarded[-20:].min() > 0.1 * unguarded[:200].min()
    assert guarded[-20:].max() < 1e-2 * unguarded[-20:].min()


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_step_magnitude_is_bounded(arch):
    """A magnitude output far beyond anything meta-trained (exp_mult 1, a = 1e3) gives the
    same finite update as one just past the bound, not an overflow to inf."""
    arch = dataclasses.replace(arch, exp_mult=1.0)
    params = _params(jax.random.key(0))
    grads = _grads(jax.random.key(1), params)
    theta = arch.init(jax.random.key(0))
    ups = []
    for a in (1e3, arch.max_log_scale + 1.0):
        th = jax.tree_util.tree_map(lambda x: x, theta)
        th["ffn"][-1]["b"] = th["ffn"][-1]["b"].at[1].set(a)
        u, _ = _update(arch, th, grads, arch.optimizer(th).init(params), params, 1.0)
        ups.append(u)
    for big, edge in zip(jax.tree_util.tree_leaves(ups[0]), jax.tree_util.tree_leaves(ups[1])):
        assert np.isfinite(np.asarray(big)).all()
        np.testing.assert_allclose(big, edge, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_meta_gradient_through_training_is_finite(arch):
    """Backpropagating through training (TBPTT) stays finite with a zero-initialised scalar
    bias and an input column that is always zero (its weights never get a gradient): sqrt and
    m / sqrt(v) at 0, and the rescaling inside rms, have infinite or 0/0 derivatives there."""
    leaves = [np.asarray(g) for g in jax.tree_util.tree_leaves(_meta_gradient(arch))]
    assert all(np.isfinite(g).all() for g in leaves)
    assert sum(float(np.abs(g).sum()) for g in leaves) > 0


def _meta_gradient(arch):
    """The gradient of the mean loss of 8 training steps with respect to theta."""
    x = jax.random.normal(jax.random.key(0), (32, 4)).at[:, 0].set(0.0)
    y = x @ jnp.array([0.0, 1.0, -2.0, 0.5]) + 0.3
    params = {"w": jnp.zeros(4), "b": jnp.zeros(())}

    def loss(p):
        return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

    def meta_loss(theta):
        opt = arch.optimizer(theta)

        def step(carry, _):
            p, s = carry
            value, g = jax.value_and_grad(loss)(p)
            u, s = opt.update(g, s, p, value=value)
            return (optax.apply_updates(p, u), s), value

        return jnp.mean(jax.lax.scan(step, (params, opt.init(params)), None, length=8)[1])

    return jax.jit(jax.grad(meta_loss))(arch.init(jax.random.key(1)))


def test_alignment_inputs_start_at_zero_and_then_steer_the_update():
    """``alignment`` adds zero-initialised input weights: the updates equal those of the same
    theta without them, until the weights move; and the meta-gradient reaches them."""
    base = Hierarchical()
    arch = dataclasses.replace(base, alignment=True)
    params = _params(jax.random.key(1))
    grads = [_grads(jax.random.key(i), params) for i in range(3)]
    theta = base.init(jax.random.key(0))
    grafted = {**arch.init(jax.random.key(0)), **theta}
    assert not np.any(np.asarray(grafted["align"]["w"]))

    def run(a, th):
        return _updates_at(a, th, params, grads)[0]

    for u, v in zip(jax.tree_util.tree_leaves(run(base, theta)),
                    jax.tree_util.tree_leaves(run(arch, grafted))):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-9)
    steered = dict(grafted, align={"w": jax.random.normal(jax.random.key(2),
                                                          grafted["align"]["w"].shape)})
    last = jax.tree_util.tree_leaves(run(arch, steered)[-1])
    same = jax.tree_util.tree_leaves(run(arch, grafted)[-1])
    assert any(not np.allclose(a, b, rtol=1e-3) for a, b in zip(last, same))
    grad = np.asarray(_meta_gradient(arch)["align"]["w"])
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_kernel_step_mult_scales_only_kernel_steps():
    """``kernel_step_mult`` multiplies the steps of rank >= 3 tensors, step after step, and
    leaves every other tensor's step (and the state the rule carries) as it was, given the same
    parameters and gradients."""
    base = Hierarchical()
    params = _params(jax.random.key(1))
    grads = [_grads(jax.random.key(i), params) for i in range(4)]
    theta = base.init(jax.random.key(0))
    ups, state = _updates_at(base, theta, params, grads)
    ups3, state3 = _updates_at(dataclasses.replace(base, kernel_step_mult=3.0), theta, params,
                               grads)
    for u, u3 in zip(ups, ups3):
        assert np.abs(u["conv"]).max() > 0
        np.testing.assert_allclose(u3["conv"], 3.0 * u["conv"], rtol=1e-5)
        for name in ("scalar", "bias", "w"):
            np.testing.assert_allclose(u3[name], u[name], rtol=1e-5)
    np.testing.assert_allclose(state3.lstm_h, state.lstm_h, rtol=1e-5, atol=1e-7)

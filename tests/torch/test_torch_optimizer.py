"""lopt.torch.LearnedOptimizer follows torch.optim's conventions."""

import io
import subprocess
import sys

import numpy as np
import pytest

# minversion: without PyTorch, tests/torch itself would import as a namespace package "torch"
torch = pytest.importorskip("torch", minversion="2.1")

from safetensors.numpy import save_file  # noqa: E402

from lopt import pretrained  # noqa: E402
from lopt.torch import LearnedOptimizer, WeightsError  # noqa: E402

NAMES = ["hierarchical", "mlp", "learned_adam"]


def _params(seed=0, bf16=False):
    """A matrix, a 4-D kernel, a vector (bfloat16 with ``bf16``) and a scalar."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(6, 5), (3, 2, 2, 2), (5,), ()]
    ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    if bf16:
        ps[2] = torch.nn.Parameter(ps[2].detach().bfloat16())
    return ps


def _loss(ps, t):
    """A smooth loss of all parameters, different at every step ``t``."""
    g = torch.Generator().manual_seed(100 + t)
    x = torch.randn(5, 4, generator=g)
    w, k, v, s = (p.float() for p in ps)
    out = (w @ x).tanh().square().mean() + (k - 0.1 * t).square().mean()
    return out + (v @ x).square().mean() + (s - 1.0).square()


def _closure(opt, ps, t):
    def closure():
        opt.zero_grad()
        loss = _loss(ps, t)
        loss.backward()
        return loss
    return closure


def _run(opt, ps, steps, start=0):
    for t in range(start, start + steps):
        if t % 3 == 0:
            opt.set_valid_loss(1.0 + 0.1 * t)
        opt.step(_closure(opt, ps, t))


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_continues_identically(weights_files, name):
    path = weights_files[name][2]
    ps = _params(bf16=True)
    frozen = torch.nn.Parameter(torch.ones(3))  # never has a gradient
    opt = LearnedOptimizer([{"params": ps[:2]}, {"params": [*ps[2:], frozen], "lr": 0.5}], path)
    _run(opt, ps, 4)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    restored = LearnedOptimizer([{"params": qs[:2]}, {"params": [*qs[2:], frozen], "lr": 1.0}],
                                path)
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer))
    assert restored.param_groups[1]["lr"] == 0.5
    assert restored.state[qs[2]][_moments(name)].dtype == torch.float32  # bfloat16 param
    _run(opt, ps, 4, start=4)
    _run(restored, qs, 4, start=4)
    assert _same(ps, qs)
    assert not opt.state[frozen] and torch.equal(frozen, torch.ones(3))


def _moments(name):
    return "mu" if name == "learned_adam" else "moments"


def test_loaded_state_is_a_copy(weights_files):
    ps = _params()
    opt = LearnedOptimizer(ps, weights_files["hierarchical"][2])
    _run(opt, ps, 2)
    state = opt.state_dict()
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    other = LearnedOptimizer(qs, weights_files["hierarchical"][2])
    other.load_state_dict(state)
    _run(opt, ps, 2, start=2)  # updates opt's state in place; other must not see it
    _run(other, qs, 2, start=2)
    assert _same(ps, qs)


def test_closure_direct_and_set_loss_give_the_same_step(weights_files):
    path = weights_files["hierarchical"][2]
    ps, qs, rs = _params(), _params(), _params()
    a, b, c = (LearnedOptimizer(x, path) for x in (ps, qs, rs))
    for t in range(3):
        returned = a.step(_closure(a, ps, t))
        for opt, xs in ((b, qs), (c, rs)):
            opt.zero_grad()
            loss = _loss(xs, t)
            loss.backward()
        assert b.step(loss=loss.item()) == loss.item()
        c.set_loss(loss)  # as for a loop that calls step() bare (Accelerate)
        c.step()
        assert torch.equal(returned, loss)
    assert _same(ps, qs) and _same(ps, rs)


def test_valid_loss_by_method_or_keyword_lasts_one_step(weights_files):
    path = weights_files["hierarchical"][2]
    runs = []
    for how in ("method", "keyword", "none"):
        ps = _params()
        opt = LearnedOptimizer(ps, path)
        for t in range(3):
            if how == "method" and t == 1:
                opt.set_valid_loss(torch.tensor(5.0))
            opt.step(_closure(opt, ps, t), valid_loss=5.0 if how == "keyword" and t == 1 else None)
        runs.append(ps)
    assert _same(runs[0], runs[1]) and not _same(runs[0], runs[2])


def test_a_missing_loss_is_a_clear_error(weights_files):
    ps = _params()
    opt = LearnedOptimizer(ps, weights_files["mlp"][2])
    _loss(ps, 0).backward()
    with pytest.raises(ValueError, match="needs the training loss"):
        opt.step()
    with pytest.raises(ValueError, match="not both"):
        opt.step(_closure(opt, ps, 0), loss=1.0)
    with pytest.raises(ValueError, match="scalar"):
        opt.step(loss=torch.ones(2))
    adam = LearnedOptimizer(ps, weights_files["learned_adam"][2])
    before = ps[0].detach().clone()
    assert adam.step() is None  # learned Adam needs no loss
    assert not torch.equal(before, ps[0])


def test_bad_weights_are_clear_errors(tmp_path, weights_files):
    ps = _params()
    save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(WeightsError, match="no lopt model card"):
        LearnedOptimizer(ps, tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a weights file")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        LearnedOptimizer(ps, tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        LearnedOptimizer(ps, tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="no shipped optimizer named 'nope'"):
        LearnedOptimizer(ps, name="nope")
    with pytest.raises(ValueError, match="not both"):
        LearnedOptimizer(ps, weights_files["mlp"][2], name="hierarchical")
    with pytest.raises(ValueError, match="lr"):
        LearnedOptimizer(ps, weights_files["mlp"][2], lr=-1.0)
    mlp = LearnedOptimizer(ps, weights_files["mlp"][2])
    _run(mlp, ps, 1)
    hier = LearnedOptimizer(ps, weights_files["hierarchical"][2])
    with pytest.raises(ValueError, match="of a 'mlp' optimizer"):
        hier.load_state_dict(mlp.state_dict())
    with pytest.raises(ValueError, match="not saved by lopt.torch"):
        hier.load_state_dict(torch.optim.SGD(ps, lr=0.1).state_dict())


def test_parameters_without_gradients_are_skipped(weights_files):
    ps = _params()
    opt = LearnedOptimizer(ps, weights_files["hierarchical"][2])
    late = ps[3]
    before = late.detach().clone()
    for t in range(2):
        opt.zero_grad()
        _loss(ps, t).backward()
        late.grad = None
        opt.step(loss=1.0)
    assert torch.equal(late, before) and not opt.state[late]
    _run(opt, ps, 1, start=2)
    assert not torch.equal(late, before) and opt.state[late]["step"] == 1
    assert opt.state[ps[0]]["step"] == 3


def test_parameter_groups_are_one_model(weights_files):
    """The hierarchical optimizer's LSTM sees the tensors of all groups together."""
    path = weights_files["hierarchical"][2]
    ps, qs = _params(), _params()
    one = LearnedOptimizer(ps, path)
    two = LearnedOptimizer([{"params": qs[:1]}, {"params": qs[1:]}], path)
    _run(one, ps, 3)
    _run(two, qs, 3)
    assert _same(ps, qs)


@pytest.mark.parametrize("name", NAMES)
def test_lr_multiplies_the_update(weights_files, name):
    path = weights_files[name][2]
    steps = []
    for lr in (1.0, 0.5, 0.0):
        ps = _params()
        before = [p.detach().clone() for p in ps]
        opt = LearnedOptimizer(ps, path, lr=lr)
        opt.step(_closure(opt, ps, 0))
        steps.append([p.detach() - b for p, b in zip(ps, before)])
    ps = _params()
    scheduled = LearnedOptimizer(ps, path)
    torch.optim.lr_scheduler.LambdaLR(scheduled, lambda step: 0.5)  # sets every group's lr
    before = [p.detach().clone() for p in ps]
    scheduled.step(_closure(scheduled, ps, 0))
    steps.append([p.detach() - b for p, b in zip(ps, before)])
    for full, half, none, scheduled in zip(*steps):  # via parameters of size ~1: atol 2 ulp
        torch.testing.assert_close(scheduled, half, rtol=0, atol=0)
        torch.testing.assert_close(half, 0.5 * full, rtol=1e-5, atol=2.5e-7)
        assert not none.any()


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_parameters(weights_files, name):
    """bfloat16 parameters: float32 state and arithmetic, the step rounded to bfloat16. (Small
    parameters: steps of 1e-3 vanish in the rounding of bfloat16 values near 1, as in JAX.)"""
    path = weights_files[name][2]
    ps = [torch.nn.Parameter(0.01 * p.detach()) for p in _params()]
    bs = [torch.nn.Parameter(p.detach().bfloat16()) for p in ps]
    opt32, opt16 = LearnedOptimizer(ps, path), LearnedOptimizer(bs, path)
    start = [p.detach().clone() for p in bs]
    for t in range(3):
        opt32.step(_closure(opt32, ps, t))
        opt16.step(_closure(opt16, bs, t))
    for p, b, s in zip(ps, bs, start):
        assert b.dtype == torch.bfloat16 and not torch.equal(b, s)
        assert all(v.dtype == torch.float32 for v in opt16.state[b].values()
                   if isinstance(v, torch.Tensor))
        torch.testing.assert_close(b.float(), p.detach(), rtol=1e-2, atol=1e-4)


def test_non_contiguous_parameters(weights_files):
    path = weights_files["hierarchical"][2]
    ps = _params()
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    qs[0] = torch.nn.Parameter(ps[0].detach().t().contiguous().t())  # column-major (6, 5)
    a, b = LearnedOptimizer(ps, path), LearnedOptimizer(qs, path)
    for t in range(3):
        grads = [torch.randn(p.shape, generator=torch.Generator().manual_seed(t)) for p in ps]
        for p, q, g in zip(ps, qs, grads):
            p.grad, q.grad = g, g.t().contiguous().t() if g.ndim == 2 else g.clone()
        a.step(loss=1.0 / (t + 1))
        b.step(loss=1.0 / (t + 1))
    assert not qs[0].is_contiguous() and _same(ps, qs)


def test_default_weights_train_a_model():
    if pretrained.DEFAULT not in pretrained.available():
        pytest.skip("the shipped default weights are not in this checkout")
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = x @ torch.randn(8, 1) + 0.1 * torch.randn(64, 1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = LearnedOptimizer(model.parameters())
    assert opt.architecture == pretrained.DEFAULT
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step(loss=loss)
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0]


def test_lopt_does_not_need_torch():
    """``import lopt`` never imports torch; without torch, ``lopt.torch`` says what to install."""
    code = ("import sys; import lopt, lopt.weights, lopt.optimizers; "
            "assert 'torch' not in sys.modules, 'lopt imported torch'; "
            "sys.modules['torch'] = None\n"
            "try:\n    import lopt.torch\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'lopt[torch]'" in out.stdout

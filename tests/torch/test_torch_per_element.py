"""The chunked per-element pipeline: chunking changes nothing but float32 rounding; bad and
extreme gradients keep the state finite."""

import pytest

# minversion: without PyTorch, tests/torch itself would import as a namespace package "torch"
torch = pytest.importorskip("torch", minversion="2.1")

from lopt.torch import LearnedOptimizer  # noqa: E402
from lopt.torch import _per_element as PE  # noqa: E402

SHAPES = [(), (7,), (30, 20), (3, 3, 2, 4)]


def _steps(path, grads, *, chunk=None, loss=1.0):
    gen = torch.Generator().manual_seed(1)
    ps = [torch.nn.Parameter(0.1 * torch.randn(s, generator=gen)) for s in SHAPES]
    opt = LearnedOptimizer(ps, path)
    if chunk:
        opt._rule.network(torch.device("cpu")).chunk = chunk
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step(loss=loss)
    return ps, opt


def _grads(steps, scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [[scale * torch.randn(s, generator=gen) for s in SHAPES] for _ in range(steps)]


@pytest.mark.parametrize("name", ["hierarchical", "mlp"])
def test_chunk_size_changes_only_rounding(weights_files, name):
    path = weights_files[name][2]
    grads = _grads(4)
    whole, _ = _steps(path, grads)
    for chunk in (7, 64):  # uneven tails; several chunks per tensor
        chunked, _ = _steps(path, grads, chunk=chunk)
        for a, b in zip(whole, chunked):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("scale", [0.0, 1e-10, 1e10])
def test_extreme_gradients_stay_finite(weights_files, scale):
    ps, opt = _steps(weights_files["hierarchical"][2], _grads(3, scale))
    start, _ = _steps(weights_files["hierarchical"][2], [])
    for p, p0 in zip(ps, start):
        assert torch.isfinite(p).all() and (p - p0).abs().max() < 0.1
        assert all(torch.isfinite(v).all() for v in opt.state[p].values()
                   if isinstance(v, torch.Tensor))


@pytest.mark.parametrize("name", ["hierarchical", "mlp"])
def test_a_nan_gradient_element_does_not_poison_the_state(weights_files, name):
    grads = _grads(2)
    grads[0][2][4, 5] = float("nan")
    ps, opt = _steps(weights_files[name][2], grads, loss=float("nan"))
    for p in ps:
        assert torch.isfinite(p).all()
        assert all(torch.isfinite(v).all() for v in opt.state[p].values()
                   if isinstance(v, torch.Tensor))
    assert opt._global["loss_count"] == 0  # non-finite losses leave the statistics alone


@pytest.mark.parametrize("scale", [1.0, 1e-10])
def test_accelerator_path_gives_the_same_updates(weights_files, monkeypatch, scale):
    """The path for GPUs (float64 sums and sanitised gradients, no synchronisation), run on the
    CPU, agrees with the CPU path (float32 sums, checked)."""
    path = weights_files["hierarchical"][2]
    grads = _grads(3, scale)
    grads[1][2][0, 0] = float("inf")
    host, _ = _steps(path, grads, chunk=64)
    monkeypatch.setattr(PE, "on_host", lambda device: False)
    device, _ = _steps(path, grads, chunk=64)
    for a, b in zip(host, device):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)

"""The per-element half of the learned optimizers in PyTorch: accumulators, normalised features
and the per-element network, a chunk of elements at a time.

PyTorch runs elementwise operations one by one, unfused, so each is a pass over its operands;
a chunk of ``CHUNK`` elements keeps those passes in cache. Every tensor takes two phases:

1. ``TensorStep.reduce``: clip the gradient, update the accumulators and reduce what needs the
   whole tensor, each feature channel's RMS and (hierarchical optimizer) the tensor summaries.
2. ``TensorStep.apply``: recompute a chunk's features, run the network with each channel's
   1/RMS folded into the first layer's weights, and add the step to the parameter.

The arithmetic is that of ``lopt.optimizers.per_element`` and ``features``; only the order of
float32 sums differs.
"""

from __future__ import annotations

import torch

from lopt.optimizers.features import DECAYS, EPS
from lopt.torch._features import clip_bound, clipped_gradient_, grad_mean_square

#: Elements per chunk on the CPU (a [23, CHUNK] float32 feature block is 3 MiB). On GPUs, where
#: each operation is a kernel launch, chunks are larger: about 0.5 GiB of scratch in all.
CHUNK = 32768
DEVICE_CHUNK = 1 << 20
K = len(DECAYS)
NUM_CHANNELS = 3 + 4 * K
# Rows of a feature block: g, log|p|, m/sqrt(v) (K), rsqrt(v) (K), p, m (K), v (K). A permutation
# of the JAX channels that puts p, m and v last and adjacent: the summaries are then single
# operations over SUMMARY, and the accumulators [m; v] one copy.
G, LOGP, MR, R2, P, M, V = 0, 1, 2, 2 + K, 2 + 2 * K, 3 + 2 * K, 3 + 3 * K
#: ``ORDER[row]``: the channel of ``lopt.optimizers.per_element.features`` in that row.
ORDER = [0, 2, *range(3 + K, 3 + 2 * K), *range(3 + 3 * K, 3 + 4 * K), 1, *range(3, 3 + K),
         *range(3 + 2 * K, 3 + 3 * K)]
SUMMARY = slice(P, NUM_CHANNELS)
# Float32 sums of squares at or below this may have lost elements to underflow: redone exactly.
_TINY = 1e-24


class Network:
    """The per-element network's weights on one device, laid out for ``TensorStep.apply``."""

    def __init__(self, theta: dict, *, exp_mult: float, step_mult: float):
        layers = sum(1 for k in theta if k.startswith("ffn.") and k.endswith(".w"))
        w0, skip = theta["ffn.0.w"][ORDER], theta["skip"][ORDER]
        #: ``[channels, hidden + 1]``: the first layer with the linear skip as its last column.
        self.first = torch.cat([w0, skip[:, None]], dim=1)
        self.first_bias = theta["ffn.0.b"]
        self.hidden = [(theta[f"ffn.{i}.w"].t(), theta[f"ffn.{i}.b"][:, None])
                       for i in range(1, layers - 1)]
        self.last = (theta[f"ffn.{layers - 1}.w"].t(), theta[f"ffn.{layers - 1}.b"][:, None])
        self.exp_mult, self.step_mult = exp_mult, step_mult
        decays = torch.tensor(DECAYS, dtype=torch.float32, device=w0.device).view(1, K, 1)
        self.decays, self.one_minus_decays = decays, 1 - decays
        self.chunk = CHUNK if w0.device.type == "cpu" else DEVICE_CHUNK
        self._buffers: dict[str, torch.Tensor] = {}

    def buffer(self, name: str, rows: int, cols: int) -> torch.Tensor:
        """A contiguous ``[rows, cols]`` scratch block, reused across chunks and steps."""
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < rows * cols:
            buf = self._buffers[name] = torch.empty(rows * cols, device=self.first.device)
        return buf[:rows * cols].view(rows, cols)


def init_state(p: torch.Tensor) -> dict:
    """Per-tensor state: update count, ``moments`` ``[2K, *shape]`` (momenta at ``DECAYS``,
    then second moments; float32) and the running mean square of the gradient for clipping."""
    return {"step": 0, "clip_ms": None,
            "moments": torch.zeros((2 * K, *p.shape), dtype=torch.float32, device=p.device)}


class TensorStep:
    """One parameter tensor's work within one optimizer step."""

    def __init__(self, param: torch.Tensor, state: dict, lr: float, net: Network):
        self.param, self.state, self.lr, self.net = param, state, lr, net
        self.flat = param.detach().reshape(-1)  # a copy only when param is not contiguous
        self.grad = param.grad.reshape(-1)
        self.acc = state["moments"].view(2 * K, -1)
        self.n = self.flat.numel()
        self.own = None  # the feature block of a one-chunk tensor, kept from reduce to apply
        self.bound = self.rms = self.summary = None

    def chunks(self):
        return [(s, min(s + self.net.chunk, self.n)) for s in range(0, self.n, self.net.chunk)]

    # --- phase 1 ------------------------------------------------------------------------------

    def reduce(self, multiple: float, summaries: bool) -> None:
        """Clips the gradient, updates the accumulators, and reduces the tensor: per-channel
        sums of squares and, with ``summaries``, the sums behind ``tensor_features``."""
        st = self.state
        self.bound, st["clip_ms"] = clip_bound(grad_mean_square(self.grad), st["clip_ms"],
                                               multiple=multiple)
        exact = self.flat.device.type != "cpu"  # float64 sums: no check, no synchronisation
        parts = self._reduce_chunks(summaries, update=True, exact=exact)
        if not exact and not self._accurate(parts, summaries):
            parts = self._reduce_chunks(summaries, update=False, exact=True)
        self._combine(parts, summaries)

    def _reduce_chunks(self, summaries, *, update, exact):
        net, parts = self.net, []
        for s, e in self.chunks():
            c = e - s
            acc = self.acc[:, s:e]
            if update:
                gg = net.buffer("gg", 2, c)
                clipped_gradient_(gg[0], self.grad[s:e], self.bound)
                torch.mul(gg[0], gg[0], out=gg[1])
                _accumulate(acc.view(2, K, c), gg.view(2, 1, c), net)
            if c == self.n:
                x = self.own = torch.empty(NUM_CHANNELS, c, device=self.flat.device)
            else:
                x = net.buffer("x", NUM_CHANNELS, c)
            if update:
                x[G].copy_(gg[0])
            else:
                clipped_gradient_(x[G], self.grad[s:e], self.bound)
            _fill(x, self.flat[s:e], acc)
            parts.append(_reduce_block(x, net.buffer("tmp", NUM_CHANNELS - P, c), summaries,
                                       torch.float64 if exact else None))
        return parts

    def _accurate(self, parts, summaries) -> bool:
        """Whether float32 sums of squares neither overflowed nor lost elements to underflow."""
        sums = [p[0] for p in parts]
        if summaries and self.n > 1:
            sums += [p[4] for p in parts]
        ss = torch.cat(sums)
        return bool(torch.isfinite(ss).all() and (ss > _TINY).all())

    def _combine(self, parts, summaries) -> None:
        n = self.n
        # RMS before any cast: float64 sums of squares can be below float32's range
        self.rms = (torch.stack([p[0] for p in parts]).sum(0) / n).sqrt().float()
        if not summaries:
            return
        logmag, sign, total, centred = (torch.stack([p[i] for p in parts]) for i in range(1, 5))
        if len(parts) == 1:
            m2 = centred[0]
        else:  # Chan et al.: chunk means and centred sums of squares combine exactly
            sizes = torch.tensor([e - s for s, e in self.chunks()], dtype=total.dtype,
                                 device=total.device)[:, None]
            mean = total.sum(0) / n
            m2 = (centred + sizes * (total / sizes - mean).square()).sum(0)
        self.summary = (logmag.sum(0) / n, sign.sum(0) / n, (m2 / n).sqrt().float())

    def tensor_features(self) -> list[torch.Tensor]:
        """The LSTM inputs of ``lopt.optimizers.features.tensor_features`` but the size ones:
        summaries of momenta, second moments and values; log RMS of parameter and gradient."""
        logmag, sign, rms_centred = self.summary
        logvar = 2 * (rms_centred + 1e-30).log()
        groups = (slice(1, 1 + K), slice(1 + K, 1 + 2 * K), slice(0, 1))  # m, v, p
        out = [t for g in groups for t in (0.1 * logmag[g], sign[g], 0.1 * logvar[g])]
        return out + [0.1 * (self.rms[[P, G]] + 1e-30).log()]

    # --- phase 2 ------------------------------------------------------------------------------

    def apply(self, bias: torch.Tensor) -> torch.Tensor:
        """Adds this tensor's learned step to the parameter; ``bias`` ``[hidden]`` is its context
        in the first layer. Returns the mean of the last hidden layer ``[hidden]``."""
        net = self.net
        scales = self.rms + 1e-30
        first = (net.first / scales[:, None]).t()
        first_bias = torch.cat([net.first_bias + bias, bias.new_zeros(1)])[:, None]
        hidden_sum = 0
        for s, e in self.chunks():
            x = self.own
            if x is None:
                x = net.buffer("x", NUM_CHANNELS, e - s)
                clipped_gradient_(x[G], self.grad[s:e], self.bound)
                _fill(x, self.flat[s:e], self.acc[:, s:e])
            step, h_sum = _network(net, first, first_bias, x)
            hidden_sum = hidden_sum + h_sum
            if self.lr != 1.0:
                step.mul_(self.lr)
            dst = self.flat[s:e]
            dst.add_(step if dst.dtype == torch.float32 else step.to(dst.dtype))
        if self.flat.data_ptr() != self.param.data_ptr():
            self.param.copy_(self.flat.view_as(self.param))
        self.state["step"] += 1
        return hidden_sum / self.n


def _accumulate(acc, gg, net: Network) -> None:
    """``acc = decays * acc + (1 - decays) * gg`` in place, the first product fused into the sum
    (one multiply-add) as XLA:CPU usually compiles it: accumulators then match JAX bit for bit,
    and with them the sign and log-magnitude summaries of near-zero momenta."""
    tmp = torch.mul(net.one_minus_decays, gg, out=net.buffer("acc", 2 * K, gg.shape[-1]).view(
        2, K, -1))
    torch.addcmul(tmp, net.decays, acc, out=acc)


def _fill(x: torch.Tensor, p: torch.Tensor, acc: torch.Tensor) -> None:
    """Writes all feature rows but the gradient's from parameter and accumulator chunks."""
    x[P].copy_(p)
    x[M:].copy_(acc)
    torch.abs(x[P], out=x[LOGP]).add_(1e-8).log_()
    vs = torch.add(x[V:], EPS, out=x[R2:R2 + K])
    torch.rsqrt(vs, out=x[MR:MR + K]).mul_(x[M:M + K])
    vs.add_(1e-16).rsqrt_()


def _reduce_block(x, tmp, summaries, dtype):
    """Partial reductions of one feature block: per-row sums of squares; with ``summaries``,
    sums of log-magnitudes and signs, sums, and centred sums of squares of the p, m, v rows."""
    squares = _sum_squares(x, dtype)
    if not summaries:
        return (squares,)
    s = x[SUMMARY]
    logmag = torch.abs(s, out=tmp).add_(1e-30).log_().sum(1)
    sign = torch.sign(s, out=tmp).sum(1)
    total = s.sum(1, dtype=dtype)
    centred = torch.sub(s, (total / s.shape[1]).to(s.dtype)[:, None], out=tmp)
    return squares, logmag, sign, total, _sum_squares(centred, dtype)


def _sum_squares(x: torch.Tensor, dtype=None, block: int = 1024) -> torch.Tensor:
    """Row sums of squares ``[rows]``. In float32, as norms of ``block``-element pieces: one
    norm over a long row sums naively and drifts (2e-5 over 30k elements), pieces do not."""
    if dtype is not None or x.shape[1] <= block:
        return torch.linalg.vector_norm(x, dim=1, dtype=dtype).square()
    rows, n = x.shape
    full = n - n % block
    out = torch.linalg.vector_norm(x[:, :full].view(rows, -1, block), dim=2).square().sum(1)
    if full < n:
        out += torch.linalg.vector_norm(x[:, full:], dim=1).square()
    return out


def _network(net: Network, first, first_bias, x):
    """Per-element network on a feature block ``[channels, c]``: the step ``[c]`` (a view of
    scratch) and the sum of the last hidden layer over the block."""
    c = x.shape[1]
    width = first.shape[0] - 1
    s = torch.addmm(first_bias, first, x, out=net.buffer("s", width + 1, c))
    h = s[:width].relu_()
    for i, (w, b) in enumerate(net.hidden):
        h = torch.addmm(b, w, h, out=net.buffer(f"h{i}", w.shape[0], c)).relu_()
    w, b = net.last
    out = torch.addmm(b, w, h, out=net.buffer("out", 2, c))
    step = out[0].add_(s[width])
    step.mul_(out[1].mul_(net.exp_mult).exp_()).mul_(net.step_mult)
    return step, h.sum(1)

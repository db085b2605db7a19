"""The per-element half of the learned optimizers in PyTorch: gradient clipping, accumulators,
normalised features and the per-element network, a chunk of elements at a time.

PyTorch runs elementwise operations one by one, unfused, so each is a pass over its operands;
a chunk of ``CHUNK`` elements keeps those passes in cache. A step takes two phases:

1. ``reduce``: clip each gradient, update the accumulators and reduce what needs the whole
   tensor: each feature channel's RMS and (hierarchical optimizer) the tensor summaries.
2. ``apply``: recompute a chunk's features, run the network with each channel's 1/RMS folded
   into the first layer's weights, and add the step to the parameter.

Tensors larger than a chunk go chunk by chunk (``Chunked``); smaller ones are packed into one
block and reduced per segment (``Packed``), so that a model of many small tensors costs few
operations. The small per-tensor arithmetic in between runs batched over all tensors. The
arithmetic is that of ``lopt.optimizers.per_element`` and ``features``; only the order of
float32 sums and where constant factors are multiplied in differ.
"""

from __future__ import annotations

import itertools

import torch

from lopt.optimizers.features import CLIP_DECAY, DECAYS, EPS
from lopt.optimizers.per_element import DERIVED_FLOOR
from lopt.torch._features import clipped_gradient_

#: Elements per chunk on the CPU (a feature block is then 3 MiB, in cache). On GPUs, where each
#: operation is a kernel launch, chunks are larger: about 0.5 GiB of scratch in all.
CHUNK = 32768
DEVICE_CHUNK = 1 << 20
K = len(DECAYS)
# Rows of a feature block: ones (the first layer's bias), g, log|p|, m/sqrt(v) (K), rsqrt(v) (K),
# p, m (K), v (K). The features are a permutation of the JAX channels that puts p, m and v last
# and adjacent: the summaries are then single operations over SUMMARY, [m; v] one copy.
ONE, G, LOGP, MR, R2, P, M, V = 0, 1, 2, 3, 3 + K, 3 + 2 * K, 4 + 2 * K, 4 + 3 * K
ROWS = 4 + 4 * K
#: ``ORDER[row - 1]``: the channel of ``lopt.optimizers.per_element.features`` in that row.
ORDER = [0, 2, *range(3 + K, 3 + 2 * K), *range(3 + 3 * K, 3 + 4 * K), 1, *range(3, 3 + K),
         *range(3 + 2 * K, 3 + 3 * K)]
# Float32 sums of squares at or below this may have lost elements to underflow: redone exactly.
_TINY = 1e-24


def chunk_spans(n: int, chunk: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of ``chunk`` elements (the last one shorter) in ``n``."""
    return [(a, min(a + chunk, n)) for a in range(0, n, chunk)]


def on_host(device: torch.device) -> bool:
    """Whether tensors on ``device`` live in host memory: then reading a value to decide on a
    fast path is free. Elsewhere (GPUs) the code never synchronises: it takes the safe path."""
    return device.type == "cpu"


class Network:
    """The per-element network's weights on one device, laid out for ``apply``, and scratch.

    Every matrix carries its bias as its first column, and every block a first row of ones, so
    each layer is one matrix product: ``[1; h'] = W' @ [1; h]``. The step multiplier is folded
    into the direction's weights, the magnitude's multiplier into the magnitude's.
    """

    def __init__(self, theta: dict, *, exp_mult: float, step_mult: float, max_log_scale: float,
                 stall_rms: float, collapse_ratio: float):
        layers = sum(1 for k in theta if k.startswith("ffn.") and k.endswith(".w"))

        def with_bias(i):
            return torch.cat([theta[f"ffn.{i}.b"][:, None], theta[f"ffn.{i}.w"].t()], dim=1)

        w0 = torch.cat([theta["ffn.0.w"][ORDER].t(), step_mult * theta["skip"][ORDER][None]])
        self.width = w0.shape[0] - 1
        #: ``[width + 1, ROWS]``: the first layer, then the linear skip; the bias column is set
        #: per tensor (its context).
        self.first = torch.cat([w0.new_zeros(self.width + 1, 1), w0], dim=1)
        self.first_bias = theta["ffn.0.b"]
        self.hidden = [with_bias(i) for i in range(1, layers - 1)]
        self.last = with_bias(layers - 1) * w0.new_tensor([[step_mult], [exp_mult]])
        #: The step's guards (``lopt.optimizers.per_element.per_element_outputs``).
        self.max_log_scale, self.stall_rms = max_log_scale, stall_rms
        self.collapse_ratio = collapse_ratio
        decays = torch.tensor(DECAYS, dtype=torch.float32, device=w0.device).view(1, K, 1)
        self.decays, self.one_minus_decays = decays, 1 - decays
        self.chunk = CHUNK if on_host(w0.device) else DEVICE_CHUNK
        self._buffers: dict[str, torch.Tensor] = {}
        self._scratch: dict[int, Scratch] = {}

    def scratch(self, cols: int) -> Scratch:
        """Scratch blocks for a chunk of ``cols`` elements (views of buffers of ``chunk``)."""
        if cols not in self._scratch:
            self._scratch[cols] = Scratch(self, cols)
        return self._scratch[cols]

    def buffer(self, name: str, rows: int, cols: int, ones: bool = False) -> torch.Tensor:
        """``[rows, cols]`` of a ``[rows, chunk]`` buffer; with ``ones`` its first row is ones,
        never written."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape[1] < cols:
            buf = torch.empty(rows, max(cols, self.chunk), device=self.first.device)
            if ones:
                buf[0] = 1.0
            self._buffers[name] = buf
        return buf[:, :cols]


class Block:
    """Row views of a feature block ``[ROWS, c]``."""

    def __init__(self, x: torch.Tensor):
        self.x, self.g, self.p, self.logp = x, x[G], x[P], x[LOGP]
        self.acc, self.m, self.v = x[M:], x[M:V], x[V:]
        self.m_rsqrt_v, self.rsqrt_v = x[MR:R2], x[R2:P]
        self.head, self.summary, self.features = x[G:P], x[P:], x[G:]

    @classmethod
    def new(cls, cols: int, device) -> Block:
        x = torch.empty(ROWS, cols, device=device)
        x[ONE] = 1.0
        return cls(x)


class Scratch:
    """The scratch blocks of one chunk size."""

    def __init__(self, net: Network, c: int):
        self.block = Block(net.buffer("x", ROWS, c, ones=True))
        self.tmp = net.buffer("tmp", ROWS - 1, c)
        self.gg = net.buffer("gg", 2, c)
        self.acc = net.buffer("acc", 2 * K, c).unflatten(0, (2, K))
        self.s = net.buffer("s", net.width + 2, c, ones=True)  # ones, hidden, skip term
        self.hidden = [net.buffer(f"h{i}", w.shape[0] + 1, c, ones=True)
                       for i, w in enumerate(net.hidden)]
        self.out = net.buffer("out", 2, c)


def init_state(p: torch.Tensor) -> dict:
    """Per-tensor state: update count, ``moments`` ``[2K, *shape]`` (momenta at ``DECAYS``,
    then second moments; float32) and the running mean square of the gradient for clipping."""
    return {"step": 0, "clip_ms": None,
            "moments": torch.zeros((2 * K, *p.shape), dtype=torch.float32, device=p.device)}


class Item:
    """A parameter tensor within one optimizer step: flat views of parameter, gradient and
    accumulators, and its gradient's clipping bound."""

    def __init__(self, param: torch.Tensor, state: dict, lr: float):
        self.param, self.state, self.lr = param, state, lr
        self.flat = param.detach().reshape(-1)  # a copy only when param is not contiguous
        self.grad = param.grad.reshape(-1)
        self.acc = state["moments"].view(2 * K, -1)
        self.n = self.flat.numel()
        self.bound = None

    def add_(self, step: torch.Tensor, factor: torch.Tensor, start: int = 0) -> None:
        """Adds the flat float32 ``step`` times ``factor`` (the group's lr times the stall
        factor, ``apply_all``) to the parameter's elements from ``start`` on."""
        step.mul_(factor)
        if "element_log_scale" in self.state:  # the step-size adaptation (``_step_adaptation``)
            step.mul_(self.state["element_log_scale"][start:start + step.numel()].exp())
        if "previous" in self.state:
            self.state["previous"][start:start + step.numel()].copy_(step)
        dst = self.flat[start:start + step.numel()]
        dst.add_(step if dst.dtype == torch.float32 else step.to(dst.dtype))

    def finish(self) -> None:
        if self.flat.data_ptr() != self.param.data_ptr():
            self.param.copy_(self.flat.view_as(self.param))
        self.state["step"] += 1


def groups(items: list[Item], nets) -> list:
    """Tensors of more than a chunk alone (``Chunked``); smaller ones packed (``Packed``)."""
    out, pack, size = [], [], 0
    for it in items:
        net = nets(it.flat.device)
        if it.n > net.chunk:
            out.append(Chunked(it, net))
            continue
        if pack and (size + it.n > net.chunk or pack[0].flat.device != it.flat.device):
            out.append(Packed(pack, nets(pack[0].flat.device)))
            pack, size = [], 0
        pack.append(it)
        size += it.n
    if pack:
        out.append(Packed(pack, nets(pack[0].flat.device)))
    return out


class Chunked:
    """A large tensor, ``chunk`` elements at a time."""

    def __init__(self, item: Item, net: Network):
        self.items, self.net, self.it = [item], net, item
        self.chunks = chunk_spans(item.n, net.chunk)

    def reduce(self, summaries: bool, *, update: bool, exact: bool,
               alignment: bool = False) -> list[torch.Tensor]:
        """With ``update``, clips the gradient and updates the accumulators (and with
        ``alignment`` first sets ``self.align``, ``_alignment_sums``). Returns ``[1, rows]``
        sums (``_reduce_block``) over the tensor (float64 sums when ``exact``)."""
        net, it, parts, align = self.net, self.it, [], 0
        dtype = torch.float64 if exact else None
        for s, e in self.chunks:
            sc, acc = net.scratch(e - s), it.acc[:, s:e]
            b = sc.block
            if update:
                g = clipped_gradient_(sc.gg[0], it.grad[s:e], it.bound)
                if alignment:
                    align = align + _alignment_sums(g[None], acc[:K], _Rows)
                torch.mul(g, g, out=sc.gg[1])
                _accumulate(acc.view(2, K, -1), sc.gg.unsqueeze(1), sc.acc, net)
                b.g.copy_(g)
            else:
                clipped_gradient_(b.g, it.grad[s:e], it.bound)
            _fill(b, it.flat[s:e], acc)
            parts.append(_reduce_block(b, sc.tmp, summaries, dtype, _Rows(e - s)))
        if alignment and update:
            self.align = align.t()
        sums = [sum(p[i] for p in parts) for i in range(len(parts[0]))]
        if summaries and len(parts) > 1:  # Chan et al.: chunks' centred sums combine exactly
            mean = sums[3] / it.n
            sums[4] = sums[4] + sum((e - s) * (p[3] / (e - s) - mean).square()
                                    for (s, e), p in zip(self.chunks, parts))
        return [x[None] for x in sums]

    def apply(self, firsts: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        """Adds the learned step to the parameter; ``firsts [1, width + 1, ROWS]`` is its first
        layer and ``factors [1]`` its step's factor (``apply_all``). Returns the sum of the last
        hidden layer ``[1, width]``."""
        net, it, hidden = self.net, self.it, 0
        for s, e in self.chunks:
            sc = net.scratch(e - s)
            b = sc.block
            clipped_gradient_(b.g, it.grad[s:e], it.bound)
            _fill(b, it.flat[s:e], it.acc[:, s:e])
            step, h = _network(net, sc, b.x, [(firsts[0], 0, e - s)])
            hidden = hidden + h[1:].sum(1)
            it.add_(step, factors[0], s)
        it.finish()
        return hidden[None]


class Packed:
    """Small tensors as segments of one feature block, kept from ``reduce`` to ``apply``."""

    def __init__(self, items: list[Item], net: Network):
        self.items, self.net = items, net
        self.sizes = [it.n for it in items]
        self.n = sum(self.sizes)
        device = items[0].flat.device
        self.counts = torch.tensor(self.sizes, device=device)
        self.count = self.counts.float()
        self.spans = [(e - n, e) for e, n in zip(itertools.accumulate(self.sizes), self.sizes)]
        self.block = Block.new(self.n, device)

    def sums(self, x: torch.Tensor, dtype=None) -> torch.Tensor:
        """Per-segment row sums ``[rows, T]`` of ``x [rows, N]``."""
        return torch.stack([c.sum(1, dtype=dtype) for c in x.split(self.sizes, dim=1)], 1)

    def centre(self, x: torch.Tensor, means: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``x`` less its per-segment ``means [rows, T]``, into ``out``."""
        for i, (a, b) in enumerate(self.spans):
            torch.sub(x[:, a:b], means[:, i:i + 1], out=out[:, a:b])
        return out

    def reduce(self, summaries: bool, *, update: bool, exact: bool,
               alignment: bool = False) -> list[torch.Tensor]:
        """As ``Chunked.reduce``, per segment: ``[T, rows]`` sums."""
        net, b, sc = self.net, self.block, self.net.scratch(self.n)
        dtype = torch.float64 if exact else None
        if update:
            self.grad = torch.cat([it.grad for it in self.items])
            self.bound = torch.stack([it.bound for it in self.items]).repeat_interleave(
                self.counts, output_size=self.n)
            self.acc = torch.cat([it.acc for it in self.items], dim=1)
            g = clipped_gradient_(sc.gg[0], self.grad, self.bound)
            if alignment:
                self.align = _alignment_sums(g[None], self.acc[:K], self).t()
            torch.mul(g, g, out=sc.gg[1])
            _accumulate(self.acc.view(2, K, -1), sc.gg.unsqueeze(1), sc.acc, net)
            torch._foreach_copy_([it.acc for it in self.items],
                                 list(self.acc.split(self.sizes, dim=1)))
            b.g.copy_(g)
        else:
            clipped_gradient_(b.g, self.grad, self.bound)
        _fill(b, torch.cat([it.flat for it in self.items]), self.acc)
        sums = _reduce_block(b, sc.tmp, summaries, dtype, self)
        return [x.t() for x in sums]

    def apply(self, firsts: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        """As ``Chunked.apply``, per segment: ``firsts [T, width + 1, ROWS]``, ``factors [T]``."""
        net, b = self.net, self.block
        spans = [(f, a, e) for f, (a, e) in zip(firsts, self.spans)]
        step, h = _network(net, net.scratch(self.n), b.x, spans)
        for it, part, factor in zip(self.items, step.split(self.sizes), factors):
            it.add_(part, factor)
            it.finish()
        return self.sums(h[1:]).t()


def reduce_all(groups: list, *, multiple: float, summaries: bool, device,
               alignment: bool = False):
    """Phase 1 for all tensors: clips, accumulates and reduces. Returns ``(rms [T, ROWS]``
    (each row's RMS; 1 for the ones row), ``summaries [T, 3, 11]`` (mean log-magnitude, mean
    sign, RMS about the mean of the p, m, v rows) or None``, ``alignment [T, K]`` (the
    gradient's cosine to each momentum before the step, ``features.alignment_features``) or
    None), tensors in group order."""
    items = [it for g in groups for it in g.items]
    _clip(items, multiple, device)
    exact = not on_host(device)  # float64 sums: no check, no synchronisation
    parts = [g.reduce(summaries, update=True, exact=exact, alignment=alignment)
             for g in groups]
    align = _cosines(torch.cat([g.align.to(device) for g in groups])) if alignment else None
    if not exact:
        for i, g in enumerate(groups):
            checked = [parts[i][0]] + ([parts[i][4][[j for j, it in enumerate(g.items)
                                                      if it.n > 1]]] if summaries else [])
            if not _accurate(torch.cat([c.flatten() for c in checked])):
                parts[i] = g.reduce(summaries, update=False, exact=True)
    n = torch.tensor([float(it.n) for it in items], dtype=torch.float64, device=device)[:, None]

    def stacked(i):
        return torch.cat([p[i].to(device=device, dtype=torch.float64) for p in parts])

    # RMS before any cast to float32: float64 sums of squares can be below its range
    rms = torch.cat([n.new_ones(len(items), 1), (stacked(0) / n).sqrt()], dim=1).float()
    rms[:, LOGP:P].clamp_(min=DERIVED_FLOOR)  # the derived channels (``channel_scales``)
    if not summaries:
        return rms, None, align
    return (rms, torch.stack([stacked(1) / n, stacked(2) / n, (stacked(4) / n).sqrt()], 1).float(),
            align)


def _alignment_sums(g, m, seg) -> torch.Tensor:
    """``[2K + 1, T]`` float64 sums (per row or segment of ``seg``) of gradient times each
    momentum ``m [K, c]``, of the squared gradient ``g [1, c]`` and squared momenta: in float64
    the squares of any float32 value neither overflow nor underflow, so the cosines are exact
    at every scale without JAX's rescaling."""
    g, m = g.double(), m.double()
    return torch.cat([seg.sums(m * g), seg.sums(g * g), seg.sums(m * m)]).reshape(2 * K + 1, -1)


def _cosines(sums: torch.Tensor) -> torch.Tensor:
    """``[T, K]`` cosines from ``[T, 2K + 1]`` alignment sums (0 where a side is zero)."""
    dots, gg, mm = sums[:, :K], sums[:, K:K + 1], sums[:, K + 1:]
    norms = (gg * mm).sqrt()
    ok = norms > 0
    return torch.where(ok, dots / torch.where(ok, norms, 1.0), 0.0).float()


def apply_all(groups: list, net: Network, rms, biases, multipliers=None) -> torch.Tensor:
    """Phase 2 for all tensors, with context ``biases [T, width]`` (``net`` on their device) and
    optional step ``multipliers [T]``. Returns the mean of the last hidden layer of each tensor
    ``[T, width]``."""
    scales = rms + 1e-30  # ``channel_scales``
    firsts = net.first / scales[:, None, :]  # each channel's 1/RMS folded in
    firsts[:, :net.width, 0] = net.first_bias + biases
    stall = (rms[:, MR + 1] / net.stall_rms).clamp(max=1.0)  # decay 0.9: m / sqrt(v)
    recent = (scales[:, V + 1] / scales[:, V + K - 1]).sqrt()  # v at decay 0.9 over 0.9999
    stall = stall * (recent / net.collapse_ratio).clamp(max=1.0)
    lrs = torch.tensor([it.lr for g in groups for it in g.items], device=rms.device)
    factors = stall * lrs if multipliers is None else stall * lrs * multipliers
    sums, start = [], 0
    for g in groups:
        stop, device = start + len(g.items), g.items[0].flat.device
        sums.append(g.apply(firsts[start:stop].to(device), factors[start:stop].to(device))
                    .to(rms.device))
        start = stop
    n = torch.tensor([float(it.n) for g in groups for it in g.items], device=rms.device)
    return torch.cat(sums) / n[:, None]


def _clip(works, multiple, device) -> None:
    """Dynamic clipping bounds of all tensors (``Item.bound``); updates ``clip_ms``.
    A tensor's first step starts from its current mean square, so nothing is clipped by an
    empty history."""
    squares = torch.stack([_grad_squares(w.grad).to(device) for w in works])
    if not on_host(device) or not torch.isfinite(squares).all():
        # non-finite gradient elements count as zero (on the CPU redone only when needed)
        squares = torch.stack([_grad_squares(torch.nan_to_num(w.grad.float(), 0.0, 0.0, 0.0))
                               .to(device) for w in works])
    current = squares / torch.tensor([float(w.n) for w in works], device=device)
    ms = current
    if any(w.state["clip_ms"] is not None for w in works):
        previous = torch.stack([current[i] if w.state["clip_ms"] is None
                                else w.state["clip_ms"].to(device) for i, w in enumerate(works)])
        first = torch.tensor([w.state["clip_ms"] is None for w in works], device=device)
        ms = torch.where(first, current, CLIP_DECAY * previous + (1 - CLIP_DECAY) * current)
    bounds = multiple * ms.sqrt()
    for w, m, b in zip(works, ms.unbind(), bounds.unbind()):
        w.state["clip_ms"], w.bound = m, b.to(w.flat.device)


def _grad_squares(g: torch.Tensor) -> torch.Tensor:
    g = g.float()
    return torch.dot(g, g)


def _accurate(sums: torch.Tensor) -> bool:
    """Whether float32 sums of squares neither overflowed nor lost elements to underflow."""
    return bool(torch.isfinite(sums).all() and (sums > _TINY).all())


def _accumulate(acc, gg, tmp, net: Network) -> None:
    """``acc = decays * acc + (1 - decays) * gg`` in place, the first product fused into the sum
    (one multiply-add) as XLA:CPU usually compiles it: accumulators then match JAX bit for bit,
    and with them the sign and log-magnitude summaries of near-zero momenta."""
    torch.addcmul(torch.mul(net.one_minus_decays, gg, out=tmp), net.decays, acc, out=acc)


def _fill(b: Block, p: torch.Tensor, acc: torch.Tensor) -> None:
    """Writes all feature rows but the gradient's from parameter and accumulator chunks."""
    b.p.copy_(p)
    b.acc.copy_(acc)
    torch.abs(b.p, out=b.logp).add_(1e-8).log_()
    vs = torch.add(b.v, EPS, out=b.rsqrt_v)
    torch.rsqrt(vs, out=b.m_rsqrt_v).mul_(b.m)
    vs.add_(1e-16).rsqrt_()


class _Rows:
    """Reductions over whole rows of a block of ``count`` elements (see ``Packed``)."""

    def __init__(self, count: int):
        self.count = count

    @staticmethod
    def sums(x: torch.Tensor, dtype=None) -> torch.Tensor:
        return x.sum(-1, dtype=dtype)

    @staticmethod
    def centre(x: torch.Tensor, means: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return torch.sub(x, means[:, None], out=out)


def _reduce_block(b: Block, tmp, summaries, dtype, seg):
    """Reductions of a feature block over rows or segments (``seg``: ``_Rows`` or ``Packed``):
    sums of squares of the features; with ``summaries`` sums of log-magnitudes and signs, sums
    and centred sums of squares of the p, m, v rows. Float64 sums when ``dtype`` is."""
    if not summaries:
        return (_squares(b.features, tmp, dtype, seg),)
    s, t = b.summary, tmp[:ROWS - P]
    logmag = seg.sums(torch.abs(s, out=t).add_(1e-30).log_())
    sign = seg.sums(torch.sign(s, out=t))
    total = seg.sums(s, dtype)
    mean = (total / seg.count).to(s.dtype)
    centred = _squares(seg.centre(s, mean, t), t, dtype, seg)
    # the p, m, v rows' sums of squares from their centred ones: no third pass over them
    squares = torch.cat([_squares(b.head, tmp[:P - G], dtype, seg),
                         centred + total.square() / seg.count])
    return squares, logmag, sign, total, centred


def _squares(x: torch.Tensor, out: torch.Tensor, dtype, seg) -> torch.Tensor:
    """Sums of squares: float32 products and PyTorch's cascaded sums (a single norm over a long
    row drifts by 2e-5), or float64 throughout."""
    if dtype is not None:
        x = x.to(dtype)
        return seg.sums(x * x)
    return seg.sums(torch.mul(x, x, out=out))


def _network(net: Network, sc: Scratch, x, spans):
    """Per-element network on a feature block ``[ROWS, c]``; ``spans``: ``(first layer, start,
    stop)`` of its columns. Returns the step ``[c]`` and the last hidden block ``[1 + width,
    c]`` (views of scratch)."""
    width = net.width
    for first, a, b in spans:
        torch.mm(first, x[:, a:b], out=sc.s[1:, a:b])
    h = sc.s[:width + 1]
    h[1:].relu_()
    for w, out in zip(net.hidden, sc.hidden):
        torch.mm(w, h, out=out[1:]).relu_()
        h = out
    out = torch.mm(net.last, h, out=sc.out)
    step = out[0].add_(sc.s[width + 1])
    return step.mul_(out[1].clamp_(max=net.max_log_scale).exp_()), h

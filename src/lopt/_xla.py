"""XLA:CPU settings lopt turns on before JAX starts its backend.

The learned optimizers' per-element networks are tall, skinny matrix products ([elements, 23] x
[23, 32]); XLA's default CPU dot reaches about 20% of a large matmul's FLOP/s on them, and its
YNNPACK dot emitter about 45-50% (benchmarks/results/optimizers.md). The same emitter slows the
many tiny products of a whole vmapped meta-training step, though, so it is opt-in: set
LOPT_XLA_FLAGS=1 before importing lopt. Flags already in XLA_FLAGS are never overridden.
"""

from __future__ import annotations

import os

FAST_CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=dot",)


def configure() -> bool:
    """Adds ``FAST_CPU_FLAGS`` to ``XLA_FLAGS`` if JAX has not started a backend yet."""
    if os.environ.get("LOPT_XLA_FLAGS", "0") != "1":
        return False
    try:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            return False
    except (ImportError, AttributeError):
        return False
    current = os.environ.get("XLA_FLAGS", "")
    extra = [f for f in FAST_CPU_FLAGS if f.split("=")[0] not in current]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()
    return True

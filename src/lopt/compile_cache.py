"""Compile time: lopt's compiler options, and a persistent cache of compiled XLA programs.

Meta-training compiles one program per pool shape bucket (about half a minute to several
minutes each on 2 cores), and a resumed run, a run that revisits a bucket, or a second run
compiles the same ones again; from the cache they load in seconds. JAX's own cache does the
work; this only picks a directory and a size bound.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

#: XLA:CPU options of lopt's training and meta-training programs: LLVM optimisation level 1
#: instead of 2. The meta-training estimate compiles in about half the time (55-60 s -> 32 s)
#: and the benchmark's training runs in about three quarters, at the same run time (XLA emits
#: vectorised loops itself, and the matrix products are library calls).
COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}

#: Environment variable naming the cache directory; set it empty to turn the cache off.
ENV = "LOPT_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lopt/xla`` (``~/.cache/lopt/xla``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lopt" / "xla"


def enable_compilation_cache(path: str | os.PathLike | None = None, *,
                             max_bytes: int = 4 << 30) -> Path | None:
    """Turns on JAX's persistent compilation cache and returns its directory.

    The directory is ``path``, else ``$LOPT_CACHE_DIR``, else ``default_cache_dir()``. A cache
    the user already configured (``JAX_COMPILATION_CACHE_DIR``) is kept as it is, and an empty
    ``LOPT_CACHE_DIR`` turns the cache off (returns None). Least recently used programs are
    evicted beyond ``max_bytes`` unless a size bound is already set.
    """
    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    env = os.environ.get(ENV)
    if path is None and env == "":
        return None
    directory = Path(path or env or default_cache_dir()).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    if jax.config.jax_compilation_cache_max_size == -1:
        jax.config.update("jax_compilation_cache_max_size", int(max_bytes))
    return directory

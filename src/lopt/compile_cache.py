"""A persistent cache of compiled XLA programs for lopt's long jobs.

Meta-training compiles one program per pool shape bucket (about half a minute to several
minutes each on 2 cores), and a resumed run, a run that revisits a bucket, or a second run
compiles the same ones again; from the cache they load in seconds. JAX's own cache does the
work; this only picks a directory and a size bound.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

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

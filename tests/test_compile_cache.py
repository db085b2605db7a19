"""The persistent compilation cache: where it goes, and that compiled programs land there."""

import os
import subprocess
import sys
import textwrap


def _run(code, **env):
    full = {**os.environ, "JAX_PLATFORMS": "cpu", **env}
    for k in [k for k, v in env.items() if v is None]:
        full.pop(k)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full,
                          capture_output=True, text=True, check=True).stdout.strip()


ENABLE_AND_COMPILE = """
    import jax, jax.numpy as jnp
    from lopt import enable_compilation_cache
    print(enable_compilation_cache())
    jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).block_until_ready()
"""


def test_programs_are_cached_in_lopt_cache_dir(tmp_path):
    out = _run(ENABLE_AND_COMPILE, LOPT_CACHE_DIR=str(tmp_path / "c"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_COMPILATION_CACHE_DIR=None)
    assert out == str(tmp_path / "c")
    assert any((tmp_path / "c").iterdir())


def test_default_dir_and_empty_variable_turns_it_off(tmp_path):
    out = _run(ENABLE_AND_COMPILE, LOPT_CACHE_DIR=None, XDG_CACHE_HOME=str(tmp_path),
               JAX_COMPILATION_CACHE_DIR=None)
    assert out == str(tmp_path / "lopt" / "xla")
    assert _run(ENABLE_AND_COMPILE, LOPT_CACHE_DIR="", JAX_COMPILATION_CACHE_DIR=None) == "None"


def test_a_cache_the_user_configured_is_kept(tmp_path):
    out = _run(ENABLE_AND_COMPILE, LOPT_CACHE_DIR=str(tmp_path / "lopt"),
               JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine"))
    assert out == str(tmp_path / "mine")

import os

# Tests run on the CPU with one thread per op; keeps timings stable on 2-core CI machines.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The CLI's persistent compilation cache stays off: tests do not write to the home directory.
os.environ.setdefault("LOPT_CACHE_DIR", "")

import os

# Tests run on the CPU with one thread per op; keeps timings stable on 2-core CI machines.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

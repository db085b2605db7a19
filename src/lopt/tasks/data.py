"""Data sets that need no download: scikit-learn's bundled sets, MNIST-1D, synthetic generators,
and text from the Python standard library's own sources.

Every data set is split once, with a fixed seed, into the paper's four splits
(``train``, ``valid``, ``outer_valid``, ``test``); arrays are cached per process.
"""

from __future__ import annotations

import functools
import os
import sysconfig

import numpy as np

from lopt.tasks.base import SPLITS

#: Fractions of each data set that go to the four splits.
SPLIT_FRACTIONS = {"train": 0.6, "valid": 0.1, "outer_valid": 0.15, "test": 0.15}

CLASSIFICATION = ("digits", "mnist1d", "breast_cancer", "wine", "synthetic")


def split_arrays(arrays: dict, *, seed: int = 0, fractions=SPLIT_FRACTIONS) -> dict:
    """Shuffles examples with a fixed seed and cuts them into the four splits."""
    n = len(next(iter(arrays.values())))
    perm = np.random.default_rng(seed).permutation(n)
    counts = [int(round(fractions[s] * n)) for s in SPLITS[:-1]]
    bounds = np.cumsum([0] + counts + [n - sum(counts)])
    return {s: {k: v[perm[bounds[i]:bounds[i + 1]]] for k, v in arrays.items()}
            for i, s in enumerate(SPLITS)}


def standardise(splits: dict, *, per_feature: bool = True) -> dict:
    """Standardisation with training-split statistics: per feature (tabular data) or one mean
    and scale for all features (pixels and signal samples, so rarely-lit pixels do not become
    huge outliers)."""
    x = splits["train"]["x"]
    axes = tuple(range(x.ndim - 1)) if x.ndim > 2 else 0
    if not per_feature:
        axes = None
    mean, std = x.mean(axis=axes), x.std(axis=axes) + 1e-6
    return {s: {"x": ((d["x"] - mean) / std).astype(np.float32), "y": d["y"]}
            for s, d in splits.items()}


@functools.lru_cache(maxsize=None)
def classification(name: str) -> dict:
    """A classification data set as four splits of ``{"x": float32 features, "y": int32 labels}``.

    ``digits`` (8x8 images, 10 classes), ``mnist1d`` (40-sample signals, 10 classes),
    ``breast_cancer`` (30 features, 2 classes), ``wine`` (13 features, 3 classes), or
    ``synthetic`` (32 features, 8 classes, sklearn's ``make_classification``).
    """
    from sklearn import datasets

    if name == "digits":
        d = datasets.load_digits()
        x, y = d.data / 16.0, d.target
    elif name == "breast_cancer":
        d = datasets.load_breast_cancer()
        x, y = d.data, d.target
    elif name == "wine":
        d = datasets.load_wine()
        x, y = d.data, d.target
    elif name == "mnist1d":
        x, y = _mnist1d()
    elif name == "synthetic":
        x, y = datasets.make_classification(
            n_samples=3000, n_features=32, n_informative=16, n_redundant=8, n_classes=8,
            n_clusters_per_class=2, class_sep=1.0, random_state=0)
    else:
        raise ValueError(f"unknown data set {name!r}; allowed: {', '.join(CLASSIFICATION)}")
    arrays = {"x": np.asarray(x, np.float32), "y": np.asarray(y, np.int32)}
    return standardise(split_arrays(arrays), per_feature=name not in ("digits", "mnist1d"))


def num_classes(name: str) -> int:
    if name in REAL_DATASETS:
        return 10
    return int(max(int(d["y"].max()) for d in classification(name).values()) + 1)


#: Data sets read from a user-named folder (``lopt.tasks.loaders``); never downloaded.
REAL_DATASETS = ("mnist", "fashion_mnist", "cifar10")


@functools.lru_cache(maxsize=8)
def real(name: str, data_dir: str | None = None, *, flat: bool = False) -> dict:
    """MNIST / Fashion-MNIST / CIFAR-10 from ``data_dir`` (or ``$LOPT_DATA_DIR``) as four splits,
    NHWC images, or flattened feature vectors with ``flat``."""
    from lopt.tasks import loaders

    splits = loaders.load(name, data_dir)
    if not flat:
        return splits
    return {s: {"x": d["x"].reshape(len(d["x"]), -1), "y": d["y"]} for s, d in splits.items()}


def _mnist1d(num_samples: int = 5000):
    """MNIST-1D generated locally by the ``mnist1d`` package (its templates ship with it)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = 42
    d = make_dataset(args)
    x = np.concatenate([d["x"], d["x_test"]])
    y = np.concatenate([d["y"], d["y_test"]])
    return x, y


@functools.lru_cache(maxsize=None)
def images(name: str, size: int = 8) -> dict:
    """Digits as NHWC images (``size`` 8, or 16 by nearest upsampling)."""
    if name != "digits":
        raise ValueError(f"unknown image data set {name!r}; allowed: digits")
    if size not in (8, 16):
        raise ValueError(f"image size must be 8 or 16, got {size}")
    out = {}
    for s, d in classification("digits").items():
        x = d["x"].reshape(-1, 8, 8, 1)
        if size == 16:
            x = x.repeat(2, axis=1).repeat(2, axis=2)
        out[s] = {"x": np.ascontiguousarray(x), "y": d["y"]}
    return out


# ---------------------------------------------------------------------------------------------
# Text from the standard library.

#: Standard-library modules whose source text forms the character-level corpus.
TEXT_MODULES = ("textwrap", "argparse", "difflib", "calendar", "fractions", "heapq", "bisect",
                "shlex", "string", "this")
VOCAB = 98  # 95 printable ASCII characters, newline, tab-as-space slot, and "other"


def _stdlib_text() -> str:
    root = sysconfig.get_paths()["stdlib"]
    parts = []
    for mod in TEXT_MODULES:
        path = os.path.join(root, mod + ".py")
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                parts.append(f.read())
    if not parts:
        raise RuntimeError(f"no standard-library sources found under {root}")
    return "\n".join(parts)


def encode_text(text: str) -> np.ndarray:
    """Characters to ids in ``[0, VOCAB)``: printable ASCII 32..126 -> 0..94, newline -> 95,
    tab -> 96, anything else -> 97."""
    codes = np.frombuffer(text.encode("utf-8", errors="replace"), np.uint8).astype(np.int32)
    ids = np.full(codes.shape, 97, np.int32)
    printable = (codes >= 32) & (codes <= 126)
    ids[printable] = codes[printable] - 32
    ids[codes == 10] = 95
    ids[codes == 9] = 96
    return ids


@functools.lru_cache(maxsize=None)
def text(max_chars: int = 400_000) -> dict:
    """The standard-library corpus as four contiguous splits of character ids ``{"tokens": ...}``."""
    ids = encode_text(_stdlib_text())[:max_chars]
    n = len(ids)
    counts = [int(SPLIT_FRACTIONS[s] * n) for s in SPLITS]
    bounds = np.cumsum([0] + counts)
    return {s: {"tokens": ids[bounds[i]:bounds[i + 1]]} for i, s in enumerate(SPLITS)}

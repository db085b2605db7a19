"""Real image data sets read from a folder the user names; nothing is ever downloaded.

The folder is the ``data_dir`` argument or, without one, the ``LOPT_DATA_DIR`` environment
variable. Expected layout (each IDX file may also be gzipped, ``<name>.gz``)::

    <data_dir>/mnist/{train-images-idx3-ubyte, train-labels-idx1-ubyte,
                      t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte}
    <data_dir>/fashion_mnist/  (the same four files)
    <data_dir>/cifar-10-batches-py/{data_batch_1, ..., data_batch_5, test_batch}

A folder passed explicitly to ``load_mnist``/``load_fashion_mnist`` may also hold the four IDX
files directly. Every loader returns the format of ``data.classification``: four splits of
``{"x": float32 NHWC images, "y": int32 labels}``, where ``train``/``valid``/``outer_valid``
are carved from the official training set with a fixed seed and ``test`` is the official test
set; images are scaled to [0, 1], then standardised per channel with training statistics.
Any unusable input raises one ``DataError`` naming the path and what was expected.
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np

from lopt.tasks.base import SPLITS
from lopt.tasks.data import SPLIT_FRACTIONS, standardise

DATA_DIR_ENV = "LOPT_DATA_DIR"
DATASETS = ("mnist", "fashion_mnist", "cifar10")
NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10}
#: Default cap on the examples of each split (keeps tasks on these data sets fast).
DEFAULT_MAX_PER_SPLIT = 10_000

IDX_FILES = {  # part -> (file name, IDX magic number)
    "train_images": ("train-images-idx3-ubyte", 0x00000803),
    "train_labels": ("train-labels-idx1-ubyte", 0x00000801),
    "test_images": ("t10k-images-idx3-ubyte", 0x00000803),
    "test_labels": ("t10k-labels-idx1-ubyte", 0x00000801),
}
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
_SUBDIRS = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "cifar10": CIFAR_DIR}

#: IDX type codes (third byte of the magic number) -> big-endian dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(ValueError):
    """A data folder or file is missing, truncated or not in the expected format."""


# ---------------------------------------------------------------------------------------------
# Public API.


def resolve_data_dir(path=None) -> Path:
    """The data folder: ``path`` if given, else ``$LOPT_DATA_DIR``; it must exist."""
    if path is None:
        path = os.environ.get(DATA_DIR_ENV)
        if not path:
            raise DataError(f"no data folder given: pass data_dir= or set ${DATA_DIR_ENV} to a "
                            "folder holding mnist/, fashion_mnist/ or cifar-10-batches-py/")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist or is not a folder")
    return folder


def available(data_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the data sets whose files are all present under the data folder (contents
    are not checked); ``[]`` if no folder is configured or it does not exist."""
    try:
        root = resolve_data_dir(data_dir)
    except DataError:
        return []
    found = []
    for name in DATASETS:
        folder = root / _SUBDIRS[name]
        try:
            _ = _cifar_files(folder) if name == "cifar10" else _idx_files(folder, name)
        except DataError:
            continue
        found.append(name)
    return found


def load(name: str, data_dir=None, *, max_per_split: int | None = DEFAULT_MAX_PER_SPLIT,
         seed: int = 0) -> dict:
    """Loads ``name`` (one of ``DATASETS``); see ``load_mnist`` for the arguments."""
    loaders = {"mnist": load_mnist, "fashion_mnist": load_fashion_mnist, "cifar10": load_cifar10}
    if name not in loaders:
        raise ValueError(f"unknown data set {name!r}; allowed: {', '.join(DATASETS)}")
    return loaders[name](data_dir, max_per_split=max_per_split, seed=seed)


def load_mnist(data_dir=None, *, max_per_split: int | None = DEFAULT_MAX_PER_SPLIT,
               seed: int = 0) -> dict:
    """MNIST as four splits of ``{"x": [n, 28, 28, 1] float32, "y": [n] int32}``.

    Args:
      data_dir: folder holding ``mnist/`` (or, passed explicitly, the IDX files themselves);
        default ``$LOPT_DATA_DIR``.
      max_per_split: cap on the examples of each split (``None``: no cap).
      seed: seed of the fixed shuffle that carves train/valid/outer_valid (and subsamples test).
    """
    return _load_idx_dataset("mnist", data_dir, max_per_split, seed)


def load_fashion_mnist(data_dir=None, *, max_per_split: int | None = DEFAULT_MAX_PER_SPLIT,
                       seed: int = 0) -> dict:
    """Fashion-MNIST from ``fashion_mnist/``; same format and arguments as ``load_mnist``."""
    return _load_idx_dataset("fashion_mnist", data_dir, max_per_split, seed)


def load_cifar10(data_dir=None, *, max_per_split: int | None = DEFAULT_MAX_PER_SPLIT,
                 seed: int = 0) -> dict:
    """CIFAR-10 ("python version" pickles in ``cifar-10-batches-py/``) as four splits of
    ``{"x": [n, 32, 32, 3] float32, "y": [n] int32}``; arguments as in ``load_mnist``."""
    root = resolve_data_dir(data_dir)
    folder = root / CIFAR_DIR
    if not folder.is_dir() and (root / CIFAR_TEST).is_file():
        folder = root  # the batches themselves, in the folder given
    files = _cifar_files(folder)
    return _cached("cifar10", tuple(files), _stamp(files), _check_cap(max_per_split), seed)


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Reads one IDX file (optionally gzipped): the array of the shape its header declares."""
    path = Path(path)
    buf = _read_bytes(path)
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] not in _IDX_DTYPES:
        found = buf[:4].hex() if buf else "an empty file"
        raise DataError(f"{path}: not an IDX file (expected a magic number "
                        f"{_magic_text(expected_magic)}, found {found})")
    magic = int.from_bytes(buf[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{path}: bad IDX magic number 0x{magic:08x}, expected "
                        f"{_magic_text(expected_magic)}")
    ndim = buf[3]
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{path}: truncated IDX header (expected {header} bytes, found {len(buf)})")
    shape = struct.unpack(f">{ndim}I", buf[4:header])
    dtype = np.dtype(_IDX_DTYPES[buf[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(buf) - header != expected:
        raise DataError(f"{path}: IDX header declares shape {shape} ({expected} bytes of data) but "
                        f"the file holds {len(buf) - header}; truncated or corrupt")
    return np.frombuffer(buf, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------------------------------------
# Files.


def _magic_text(magic):
    return "0x0000080N (N = number of dimensions)" if magic is None else f"0x{magic:08x}"


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e}); expected a "
                        f"{'gzipped ' if path.suffix == '.gz' else ''}IDX file") from e


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_files(folder: Path, dataset: str) -> dict:
    """part -> path of the four IDX files of ``dataset`` in ``folder``."""
    if not folder.is_dir():
        raise DataError(f"{dataset}: folder {folder} does not exist (expected the IDX files "
                        f"{', '.join(n for n, _ in IDX_FILES.values())} there)")
    files = {}
    for part, (name, _) in IDX_FILES.items():
        path = _find(folder, name)
        if path is None:
            raise DataError(f"{dataset}: missing file {folder / name} (or {name}.gz)")
        files[part] = path
    return files


def _cifar_files(folder: Path) -> list:
    if not folder.is_dir():
        raise DataError(f"cifar10: folder {folder} does not exist (expected the python-version "
                        f"batches {', '.join(CIFAR_TRAIN)} and {CIFAR_TEST} there)")
    files = []
    for name in (*CIFAR_TRAIN, CIFAR_TEST):
        path = folder / name
        if not path.is_file():
            raise DataError(f"cifar10: missing file {path}")
        files.append(path)
    return files


def _stamp(paths) -> tuple:
    """Sizes and modification times: a changed file misses the cache."""
    return tuple((os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths)


def _check_cap(max_per_split):
    if max_per_split is not None and (isinstance(max_per_split, bool)
                                      or not isinstance(max_per_split, (int, np.integer))
                                      or max_per_split < 1):
        raise ValueError(f"max_per_split must be a positive integer or None, got {max_per_split!r}")
    return None if max_per_split is None else int(max_per_split)


def _load_idx_dataset(name, data_dir_arg, max_per_split, seed):
    root = resolve_data_dir(data_dir_arg)
    folder = root / _SUBDIRS[name]
    explicit = data_dir_arg is not None
    if not folder.is_dir() and explicit and _find(root, IDX_FILES["test_labels"][0]):
        folder = root  # the files themselves, in a folder given explicitly
    files = _idx_files(folder, name)
    paths = tuple(files[p] for p in IDX_FILES)
    return _cached(name, paths, _stamp(paths), _check_cap(max_per_split), seed)


@functools.lru_cache(maxsize=8)
def _cached(name, paths, stamp, max_per_split, seed):
    del stamp  # part of the cache key only
    if name == "cifar10":
        (x_train, y_train), (x_test, y_test) = _read_cifar(paths)
    else:
        (x_train, y_train), (x_test, y_test) = _read_mnist_like(name, paths)
    return _make_splits(x_train, y_train, x_test, y_test, max_per_split, seed)


# ---------------------------------------------------------------------------------------------
# Formats.


def _read_mnist_like(name, paths):
    arrays = {}
    for (part, (_, magic)), path in zip(IDX_FILES.items(), paths):
        arr = read_idx(path, magic)
        if arr.dtype != np.uint8:
            raise DataError(f"{path}: expected unsigned bytes (type code 0x08), found {arr.dtype}")
        arrays[part] = (arr, path)
    out = []
    for split in ("train", "test"):
        (images, ipath), (labels, lpath) = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise DataError(f"{name}: {ipath} holds {len(images)} images but {lpath} holds "
                            f"{len(labels)} labels; expected equal counts")
        if len(images) == 0:
            raise DataError(f"{name}: {ipath} holds no images")
        if labels.max() >= NUM_CLASSES[name]:
            raise DataError(f"{name}: {lpath} holds label {labels.max()}; expected labels in "
                            f"[0, {NUM_CLASSES[name]})")
        out.append((images[..., None], labels))
    if out[0][0].shape[1:] != out[1][0].shape[1:]:
        raise DataError(f"{name}: training images of shape {out[0][0].shape[1:3]} but test images "
                        f"of shape {out[1][0].shape[1:3]} in {paths[2]}; expected equal shapes")
    return out


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only: a data file runs no code."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                *((f"numpy.{core}.multiarray", name) for core in ("core", "_core")
                  for name in ("_reconstruct", "scalar")),
                *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core"))}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_batch(path: Path):
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except Exception as e:  # any unpickling failure means a corrupt or foreign file
        raise DataError(f"{path}: not a CIFAR-10 python-version batch ({type(e).__name__}: {e}); "
                        "expected a pickled dict with b'data' and b'labels'") from e
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict with b'data' and b'labels', found "
                        f"{type(batch).__name__}")
    get = lambda key: batch.get(key.encode(), batch.get(key))  # noqa: E731
    images, labels = get("data"), get("labels")
    if images is None or labels is None:
        raise DataError(f"{path}: the pickled dict lacks b'data' or b'labels' (keys: "
                        f"{sorted(map(str, batch))})")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        raise DataError(f"{path}: b'data' must be uint8 of shape [n, 3072], found "
                        f"{images.dtype} {images.shape}")
    try:
        labels = np.asarray(labels, np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: b'labels' must be a list of integers ({e})") from e
    if len(labels) != len(images):
        raise DataError(f"{path}: {len(images)} images but {len(labels)} labels; expected equal")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES["cifar10"]):
        raise DataError(f"{path}: labels must lie in [0, 10), found "
                        f"[{labels.min()}, {labels.max()}]")
    # Rows are three 32x32 planes (red, green, blue), each row-major: to NHWC.
    return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _read_cifar(paths):
    train = [_read_cifar_batch(p) for p in paths[:-1]]
    test = _read_cifar_batch(paths[-1])
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])), test


def _make_splits(x_train, y_train, x_test, y_test, max_per_split, seed):
    """Carves train/valid/outer_valid from the official training set (in the proportions of
    ``data.SPLIT_FRACTIONS``), caps every split, scales to [0, 1] and standardises."""
    rng = np.random.default_rng(seed)
    n = len(y_train)
    fractions = {s: SPLIT_FRACTIONS[s] for s in SPLITS[:-1]}
    total = sum(fractions.values())
    n_valid = int(round(n * fractions["valid"] / total))
    n_outer = int(round(n * fractions["outer_valid"] / total))
    perm = rng.permutation(n)
    parts = {"valid": perm[:n_valid], "outer_valid": perm[n_valid:n_valid + n_outer],
             "train": perm[n_valid + n_outer:]}
    test_perm = rng.permutation(len(y_test))
    out = {}
    for split in SPLITS:
        x, y, idx = (x_test, y_test, test_perm) if split == "test" else (x_train, y_train,
                                                                         parts[split])
        idx = idx[:max_per_split]
        out[split] = {"x": x[idx].astype(np.float32) / 255.0, "y": y[idx].astype(np.int32)}
    if len(out["train"]["y"]) == 0:
        raise DataError(f"only {n} training examples: too few to carve three splits")
    return standardise(out)

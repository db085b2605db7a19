"""Real-data loaders, on small synthetic files written in the real formats."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from lopt.tasks import loaders
from lopt.tasks.base import SPLITS
from lopt.tasks.loaders import DataError

N_TRAIN, N_TEST = 40, 12


# ---------------------------------------------------------------------------------------------
# Writers for the real formats.


def write_idx(path, array, *, gz=False, magic=None):
    """Writes ``array`` (uint8) as an IDX file: magic 0x0000 08 <ndim>, big-endian dims, data."""
    array = np.asarray(array, np.uint8)
    if magic is None:
        magic = 0x0800 + array.ndim
    blob = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.write_bytes(blob)
    return path


def _images_with_ids(rng, n, shape):
    """Random images whose first byte is the example's index (so outputs can be matched)."""
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    images.reshape(n, -1)[:, 0] = np.arange(n)
    return images


def make_idx_set(folder, *, gz=False, seed=0):
    """Four MNIST-format files in ``folder``; returns the raw arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    raw = {"train": (_images_with_ids(rng, N_TRAIN, (28, 28)), rng.integers(0, 10, N_TRAIN)),
           "test": (_images_with_ids(rng, N_TEST, (28, 28)), rng.integers(0, 10, N_TEST))}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", raw[split][0], gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", raw[split][1], gz=gz)
    return raw


def make_cifar(root, *, per_batch=8, n_test=N_TEST, protocol=pickle.HIGHEST_PROTOCOL):
    """CIFAR-10 python-version batches under ``root/cifar-10-batches-py``; returns raw rows."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = _images_with_ids(rng, 5 * per_batch, (3072,))
    labels = rng.integers(0, 10, 5 * per_batch)
    test_rows, test_labels = _images_with_ids(rng, n_test, (3072,)), rng.integers(0, 10, n_test)
    for i in range(5):
        sl = slice(i * per_batch, (i + 1) * per_batch)
        _pickle(folder / f"data_batch_{i + 1}", rows[sl], labels[sl], protocol)
    _pickle(folder / "test_batch", test_rows, test_labels, protocol)
    return {"train": (rows, labels), "test": (test_rows, test_labels)}


def _pickle(path, rows, labels, protocol):
    batch = {b"batch_label": b"synthetic", b"labels": [int(v) for v in labels], b"data": rows,
             b"filenames": [b"img%d.png" % i for i in range(len(rows))]}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def _match(out, raw, to_flat):
    """Checks that the output splits are the raw examples, standardised by one increasing
    affine map per channel, with their labels; returns the raw indices of each split."""
    indices = {}
    for group, splits in (("train", SPLITS[:-1]), ("test", ("test",))):
        images, labels = raw[group]
        xs = np.concatenate([to_flat(out[s]["x"]) for s in splits])  # [n, channels, pixels]
        ids = np.argsort(np.argsort(xs[:, 0, 0]))  # the first byte encodes the index: rank it
        assert sorted(ids) == list(range(len(images))), "splits must partition the examples"
        expected = images.reshape(len(images), xs.shape[1], -1)[ids].astype(np.float64)
        for c in range(xs.shape[1]):
            slope, intercept = np.polyfit(expected[:, c].ravel(), xs[:, c].ravel(), 1)
            assert slope > 0
            np.testing.assert_allclose(xs[:, c], slope * expected[:, c] + intercept, atol=1e-4)
        np.testing.assert_array_equal(np.concatenate([out[s]["y"] for s in splits]), labels[ids])
        bounds = np.cumsum([0] + [len(out[s]["y"]) for s in splits])
        indices.update({s: ids[bounds[i]:bounds[i + 1]] for i, s in enumerate(splits)})
    return indices


def _mnist_flat(x):
    return x.reshape(len(x), 1, -1)


def _cifar_flat(x):
    return x.transpose(0, 3, 1, 2).reshape(len(x), 3, -1)  # NHWC -> the rows' channel planes


# ---------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST.


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trips(tmp_path, gz):
    raw = make_idx_set(tmp_path / "mnist", gz=gz)
    out = loaders.load_mnist(tmp_path, max_per_split=None)
    assert set(out) == set(SPLITS)
    for s in SPLITS:
        assert out[s]["x"].dtype == np.float32 and out[s]["y"].dtype == np.int32
        assert out[s]["x"].shape == (len(out[s]["y"]), 28, 28, 1)
    assert len(out["test"]["y"]) == N_TEST
    assert sum(len(out[s]["y"]) for s in SPLITS[:-1]) == N_TRAIN
    assert len(out["train"]["y"]) > len(out["outer_valid"]["y"]) > len(out["valid"]["y"]) > 0
    _match(out, raw, _mnist_flat)
    x = out["train"]["x"]
    assert abs(x.mean()) < 1e-5 and x.std() == pytest.approx(1.0, rel=1e-4)


def test_read_idx_reads_headers_and_rejects_bad_files(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a-idx3-ubyte", arr, gz=True)
    np.testing.assert_array_equal(loaders.read_idx(path), arr)
    np.testing.assert_array_equal(loaders.read_idx(path, 0x803), arr)
    with pytest.raises(DataError, match="bad IDX magic number 0x00000803, expected 0x00000801"):
        loaders.read_idx(path, 0x801)
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(DataError, match="junk: not an IDX file"):
        loaders.read_idx(tmp_path / "junk")


def test_fashion_mnist_env_var_and_explicit_folders(tmp_path, monkeypatch):
    raw_fashion = make_idx_set(tmp_path / "data" / "fashion_mnist", seed=5)
    raw_mnist = make_idx_set(tmp_path / "data" / "mnist", gz=True, seed=6)
    monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path / "data"))
    _match(loaders.load_fashion_mnist(max_per_split=None), raw_fashion, _mnist_flat)
    _match(loaders.load("mnist", max_per_split=None), raw_mnist, _mnist_flat)
    assert loaders.available() == ["mnist", "fashion_mnist"]
    # A folder passed explicitly may hold the files themselves, and wins over the variable.
    raw_direct = make_idx_set(tmp_path / "direct", seed=7)
    _match(loaders.load_mnist(tmp_path / "direct", max_per_split=None), raw_direct, _mnist_flat)
    # ... but through the variable only the named sub-folders count.
    monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path / "direct"))
    with pytest.raises(DataError, match="fashion_mnist"):
        loaders.load_fashion_mnist()


def test_split_carving_is_fixed_by_the_seed_and_capped(tmp_path):
    raw = make_idx_set(tmp_path / "mnist")
    a = loaders.load_mnist(tmp_path, max_per_split=None)
    b = loaders.load_mnist(tmp_path, max_per_split=None, seed=1)
    ia, ib = _match(a, raw, _mnist_flat), _match(b, raw, _mnist_flat)
    assert not np.array_equal(ia["train"], ib["train"])
    assert loaders.load_mnist(tmp_path, max_per_split=None) is a  # cached
    capped = loaders.load_mnist(tmp_path, max_per_split=5)
    assert all(len(capped[s]["y"]) == 5 for s in SPLITS)
    with pytest.raises(ValueError, match="max_per_split"):
        loaders.load_mnist(tmp_path, max_per_split=0)


def test_a_changed_file_is_reread(tmp_path):
    make_idx_set(tmp_path / "mnist", seed=1)
    first = loaders.load_mnist(tmp_path, max_per_split=None)
    raw = make_idx_set(tmp_path / "mnist", seed=2)
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte"
    st = os.stat(path)  # make sure the change shows even on coarse file-system clocks
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = loaders.load_mnist(tmp_path, max_per_split=None)
    assert second is not first
    _match(second, raw, _mnist_flat)


# ---------------------------------------------------------------------------------------------
# CIFAR-10.


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_round_trips_to_nhwc(tmp_path, protocol):
    raw = make_cifar(tmp_path, protocol=protocol)
    out = loaders.load_cifar10(tmp_path, max_per_split=None)
    for s in SPLITS:
        assert out[s]["x"].dtype == np.float32 and out[s]["y"].dtype == np.int32
        assert out[s]["x"].shape == (len(out[s]["y"]), 32, 32, 3)
    assert sum(len(out[s]["y"]) for s in SPLITS[:-1]) == 40 and len(out["test"]["y"]) == N_TEST
    idx = _match(out, raw, _cifar_flat)
    # Channel c, row h, column w of an image is byte c * 1024 + h * 32 + w of its row.
    rows = raw["train"][0][idx["train"]].astype(np.float64)
    x = out["train"]["x"]
    for c, h, w in ((0, 0, 5), (1, 3, 7), (2, 31, 30)):
        assert np.corrcoef(x[:, h, w, c], rows[:, c * 1024 + h * 32 + w])[0, 1] > 0.9999
    assert np.abs(x.mean(axis=(0, 1, 2))).max() < 1e-5  # standardised per channel
    assert loaders.available(tmp_path) == ["cifar10"]


def test_cifar10_pickled_by_old_numpy_loads(tmp_path):
    """Official batches were pickled by Python 2 / old NumPy: ``numpy.core.multiarray``."""
    raw = make_cifar(tmp_path, protocol=2)
    for path in (tmp_path / "cifar-10-batches-py").iterdir():
        blob = path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        path.write_bytes(blob)
    _match(loaders.load_cifar10(tmp_path, max_per_split=None), raw, _cifar_flat)


# ---------------------------------------------------------------------------------------------
# Errors: one clear DataError (a ValueError) naming the path and what was expected.


def test_no_folder_and_missing_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("LOPT_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="LOPT_DATA_DIR"):
        loaders.load_mnist()
    assert loaders.available() == []
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'} does not exist"):
        loaders.load_cifar10(tmp_path / "nope")
    monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="nope"):
        loaders.load_fashion_mnist()
    assert loaders.available() == []
    with pytest.raises(DataError, match="mnist: folder .* does not exist"):
        loaders.load_mnist(tmp_path)
    assert issubclass(DataError, ValueError)


def test_missing_file(tmp_path):
    make_idx_set(tmp_path / "mnist", gz=True)
    os.remove(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match=r"missing file .*t10k-labels-idx1-ubyte \(or .*\.gz\)"):
        loaders.load_mnist(tmp_path)
    assert loaders.available(tmp_path) == []
    make_cifar(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DataError, match="missing file .*data_batch_3"):
        loaders.load_cifar10(tmp_path)


def test_bad_magic_number(tmp_path):
    make_idx_set(tmp_path / "mnist")
    labels = np.zeros(N_TRAIN, np.uint8)  # a labels file where the images belong
    write_idx(tmp_path / "mnist" / "train-images-idx3-ubyte", labels)
    with pytest.raises(DataError, match="train-images-idx3-ubyte: bad IDX magic number "
                                        "0x00000801, expected 0x00000803"):
        loaders.load_mnist(tmp_path)
    (tmp_path / "mnist" / "train-images-idx3-ubyte").write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="train-images-idx3-ubyte: not an IDX file"):
        loaders.load_mnist(tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_files(tmp_path, gz):
    make_idx_set(tmp_path / "mnist", gz=gz)
    name = "t10k-images-idx3-ubyte" + (".gz" if gz else "")
    path = tmp_path / "mnist" / name
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match=f"{name}: .*(truncated|cannot read)"):
        loaders.load_mnist(tmp_path)


def test_wrong_sizes(tmp_path):
    make_idx_set(tmp_path / "mnist")
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte", np.zeros(N_TRAIN - 1))
    with pytest.raises(DataError, match=f"{N_TRAIN} images but .*{N_TRAIN - 1} labels"):
        loaders.load_mnist(tmp_path)
    make_idx_set(tmp_path / "mnist")
    write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte", np.zeros((N_TEST, 14, 14)))
    with pytest.raises(DataError, match="expected equal shapes"):
        loaders.load_mnist(tmp_path)
    make_idx_set(tmp_path / "mnist")
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", np.full(N_TEST, 12))
    with pytest.raises(DataError, match=r"label 12; expected labels in \[0, 10\)"):
        loaders.load_mnist(tmp_path)


@pytest.mark.parametrize("corruption", ["no_keys", "truncated", "wrong_shape", "not_a_dict",
                                        "code"])
def test_malformed_cifar_batches(tmp_path, corruption):
    make_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    if corruption == "no_keys":
        path.write_bytes(pickle.dumps({b"images": np.zeros((8, 3072), np.uint8)}))
        expected = "lacks b'data' or b'labels'"
    elif corruption == "truncated":
        path.write_bytes(path.read_bytes()[:100])
        expected = "not a CIFAR-10 python-version batch"
    elif corruption == "wrong_shape":
        path.write_bytes(pickle.dumps({b"data": np.zeros((8, 1024), np.uint8),
                                       b"labels": [0] * 8}))
        expected = r"must be uint8 of shape \[n, 3072\]"
    elif corruption == "not_a_dict":
        path.write_bytes(pickle.dumps([1, 2, 3]))
        expected = "expected a pickled dict"
    else:  # a pickle that would run code: refused, not executed
        path.write_bytes(pickle.dumps(_Exploit(tmp_path / "pwned")))
        expected = "refusing to load"
    with pytest.raises(DataError, match=f"data_batch_2: .*{expected}"):
        loaders.load_cifar10(tmp_path)
    assert not (tmp_path / "pwned").exists()


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch '{self.path}'",))

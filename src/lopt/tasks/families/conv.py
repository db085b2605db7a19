"""Small convolutional classifiers: 2-D conv nets on digit images, 1-D conv nets on MNIST-1D.

Both families share one spec: a stack of ``SAME``-padded convolutions (optionally downsampling
by 2 per layer through a stride or an average pool), global average pooling and a dense head.
Kernels come from ``common.init_kernel`` so the initialiser kind and scale stay traced;
convolutions are computed as patch matmuls (see ``conv_same``).

16x16 images enter through a stride-2 first layer (a "stem"): full-resolution 16x16 feature
maps cost ~4x as much as 8x8 ones, several times the ~5 ms per-step budget at batch 128.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp

from lopt.tasks import data
from lopt.tasks.base import TaskFamily, TaskParts, TaskSpec, choice
from lopt.tasks.families.common import (
    ACTIVATIONS, INITIALIZERS, cross_entropy, init_hparams, init_kernel)

DOWNSAMPLE = ("none", "stride", "avg_pool")
ACTS = ("relu", "tanh", "gelu", "swish")
BATCH = (32, 128)
TRAIN_FRACTION = (0.25, 0.5, 1.0)

CHANNELS_2D = ((8, 8), (8, 16), (16, 16))
IMAGE_SIZES = (8, 16)
CHANNELS_1D = ((8,), (16,), (8, 16), (16, 16), (16, 32))
KERNELS_1D = (3, 5)


@dataclasses.dataclass(frozen=True)
class ConvClassifierSpec(TaskSpec):
    """A conv net on inputs of ``input_shape`` (spatial dims then channels), per example."""

    input_shape: tuple
    channels: tuple
    kernel: int
    downsample: str  # one of DOWNSAMPLE, applied at every conv layer
    activation: str
    num_classes: int
    batch_size: int
    stem_stride: int = 1  # stride of the first layer when ``downsample`` is not "stride"

    @property
    def ndim(self) -> int:
        return len(self.input_shape) - 1

    def init(self, hp, key):
        keys = jax.random.split(key, len(self.channels) + 1)
        sizes = (self.input_shape[-1], *self.channels)
        window = (self.kernel,) * self.ndim
        convs = [
            {"w": _conv_kernel(k, window, c_in, c_out, hp), "b": jnp.zeros((c_out,))}
            for k, c_in, c_out in zip(keys[:-1], sizes[:-1], sizes[1:])
        ]
        head = {"w": init_kernel(keys[-1], (sizes[-1], self.num_classes), hp["init_kind"],
                                 hp["init_scale"]),
                "b": jnp.zeros((self.num_classes,))}
        return {"convs": convs, "head": head}

    def features(self, params, x):
        """The last conv layer's feature map ``[batch, *spatial, channels]`` for inputs ``x`` of
        ``[batch, *input_shape]`` (or flat, e.g. MNIST-1D signals without a channel axis)."""
        x = x.reshape((x.shape[0], *self.input_shape))
        act = ACTIVATIONS[self.activation]
        for i, layer in enumerate(params["convs"]):
            stride = 2 if self.downsample == "stride" else (self.stem_stride if i == 0 else 1)
            x = act(conv_same(x, layer["w"], stride) + layer["b"])
            if self.downsample == "avg_pool":
                x = _avg_pool2(x)
        return x

    def apply(self, params, x):
        """Logits ``[batch, num_classes]``: global average pool of the features, dense head."""
        pooled = self.features(params, x).mean(axis=tuple(range(1, 1 + self.ndim)))
        return pooled @ params["head"]["w"] + params["head"]["b"]

    def loss(self, hp, params, batch, key):
        return cross_entropy(self.apply(params, batch["x"]), batch["y"])


def _conv_kernel(key, window, c_in, c_out, hp):
    """A ``[*window, c_in, c_out]`` kernel, drawn as its 2-D ``[fan_in, c_out]`` matrix: same
    distribution, but XLA compiles threefry for 4-D shapes ~10x slower (seconds per kernel)."""
    fan_in = c_in
    for n in window:
        fan_in *= n
    w = init_kernel(key, (fan_in, c_out), hp["init_kind"], hp["init_scale"])
    return w.reshape(*window, c_in, c_out)


def conv_same(x, w, stride=1):
    """``SAME``-padded, channels-last cross-correlation of ``x`` [batch, *spatial, c_in] with ``w``
    [*kernel, c_in, c_out], as one matmul over gathered patches (im2col).

    Same result as ``lax.conv_general_dilated(..., "SAME")``, but XLA:CPU runs that 6-12x slower
    inside ``lax.scan`` (where all training runs) than outside; a matmul has no such slow path.
    """
    k, spatial = w.shape[0], x.shape[1:-1]
    out_sizes = [-(-n // stride) for n in spatial]
    pads = [max((m - 1) * stride + k - n, 0) for m, n in zip(out_sizes, spatial)]
    x = jnp.pad(x, [(0, 0), *[(p // 2, p - p // 2) for p in pads], (0, 0)])
    patches = [
        x[(slice(None), *(slice(o, o + (m - 1) * stride + 1, stride)
                          for o, m in zip(offset, out_sizes)))]
        for offset in itertools.product(range(k), repeat=len(spatial))
    ]
    return jnp.concatenate(patches, axis=-1) @ w.reshape(-1, w.shape[-1])


def _avg_pool2(x):
    """Non-overlapping 2-wide average pooling over every spatial axis of a channels-last array
    (an odd trailing row or column, as in 28x28 images after two halvings, is dropped)."""
    x = x[(slice(None), *(slice(0, n - n % 2) for n in x.shape[1:-1]))]
    split = [x.shape[0]]
    for n in x.shape[1:-1]:
        split += [n // 2, 2]
    axes = tuple(range(2, 2 * (x.ndim - 2) + 1, 2))
    return x.reshape(*split, x.shape[-1]).mean(axis=axes)


def _hparams(config, num_train, batch_size):
    n_train = max(batch_size, int(config["train_fraction"] * num_train))
    return {"init_kind": config["init_kind"], "init_scale": config["init_scale"],
            "n_train": n_train}


class Conv2DClassifier(TaskFamily):
    name = "conv2d"
    description = "2-D conv nets on scikit-learn digits (8x8 or upsampled 16x16), cross-entropy."
    space = {
        "image_size": IMAGE_SIZES,
        "channels": CHANNELS_2D,
        "kernel": (3,),
        "downsample": DOWNSAMPLE,
        "stem_stride": "2 for 16x16 images (first layer), else 1",
        "activation": ACTS,
        "initializer": INITIALIZERS,
        "init_scale": "log-uniform [0.5, 2] x initialiser gain",
        "batch_size": BATCH,
        "train_fraction": TRAIN_FRACTION,
    }

    def sample_config(self, rng):
        return {
            "image_size": choice(rng, IMAGE_SIZES),
            "channels": list(choice(rng, CHANNELS_2D)),
            "downsample": choice(rng, DOWNSAMPLE),
            "activation": choice(rng, ACTS),
            "batch_size": choice(rng, BATCH),
            "train_fraction": choice(rng, TRAIN_FRACTION),
            **init_hparams(rng),
        }

    def build(self, config, *, data_dir=None):
        name = config.get("dataset", "digits")
        if name in data.REAL_DATASETS:  # 28x28 or 32x32 images from a data folder
            ds = data.real(name, None if data_dir is None else str(data_dir))
            shape = ds["train"]["x"].shape[1:]
        else:
            size = config["image_size"]
            ds = data.images("digits", size)
            shape = (size, size, 1)
        spec = ConvClassifierSpec(
            input_shape=tuple(shape), channels=tuple(config["channels"]), kernel=3,
            downsample=config["downsample"], activation=config["activation"],
            num_classes=data.num_classes(name), batch_size=config["batch_size"],
            stem_stride=2 if shape[0] >= 16 else 1)
        return TaskParts(spec, _hparams(config, len(ds["train"]["y"]), spec.batch_size), ds)


class Conv1DClassifier(TaskFamily):
    name = "conv1d"
    description = "1-D conv nets on MNIST-1D signals (40 samples), cross-entropy."
    space = {
        "channels": CHANNELS_1D,
        "kernel": KERNELS_1D,
        "downsample": DOWNSAMPLE,
        "activation": ACTS,
        "initializer": INITIALIZERS,
        "init_scale": "log-uniform [0.5, 2] x initialiser gain",
        "batch_size": BATCH,
        "train_fraction": TRAIN_FRACTION,
    }

    def sample_config(self, rng):
        return {
            "channels": list(choice(rng, CHANNELS_1D)),
            "kernel": choice(rng, KERNELS_1D),
            "downsample": choice(rng, DOWNSAMPLE),
            "activation": choice(rng, ACTS),
            "batch_size": choice(rng, BATCH),
            "train_fraction": choice(rng, TRAIN_FRACTION),
            **init_hparams(rng),
        }

    def build(self, config):
        ds = data.classification("mnist1d")
        spec = ConvClassifierSpec(
            input_shape=(ds["train"]["x"].shape[1], 1), channels=tuple(config["channels"]),
            kernel=config["kernel"], downsample=config["downsample"],
            activation=config["activation"], num_classes=data.num_classes("mnist1d"),
            batch_size=config["batch_size"])
        return TaskParts(spec, _hparams(config, len(ds["train"]["y"]), spec.batch_size), ds)


assert set(ACTS) <= set(ACTIVATIONS)

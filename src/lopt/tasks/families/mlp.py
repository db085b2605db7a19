"""MLP classifiers on small tabular and image data sets."""

from __future__ import annotations

import dataclasses

import jax

from lopt.tasks import data
from lopt.tasks.base import TaskFamily, TaskParts, TaskSpec, choice
from lopt.tasks.families.common import (
    ACTIVATIONS, INITIALIZERS, apply_dense_stack, cross_entropy, init_dense_stack, init_hparams)

HIDDEN = ((32,), (64,), (128,), (32, 32), (64, 64), (128, 64), (32, 32, 32))
ACTS = ("relu", "tanh", "gelu", "swish")
BATCH = (32, 128)
TRAIN_FRACTION = (0.25, 0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class MLPClassifierSpec(TaskSpec):
    in_dim: int
    hidden: tuple
    num_classes: int
    activation: str
    batch_size: int

    def init(self, hp, key):
        return init_dense_stack(key, (self.in_dim, *self.hidden, self.num_classes), hp)

    def loss(self, hp, params, batch, key):
        logits = apply_dense_stack(params, batch["x"], self.activation)
        return cross_entropy(logits, batch["y"])


class MLPClassifier(TaskFamily):
    name = "mlp"
    description = "Multi-layer perceptron classifiers, softmax cross-entropy."
    space = {
        "dataset": data.CLASSIFICATION,
        "dataset (with a data folder)": data.REAL_DATASETS,
        "hidden": HIDDEN,
        "activation": ACTS,
        "initializer": INITIALIZERS,
        "init_scale": "log-uniform [0.5, 2] x initialiser gain",
        "batch_size": BATCH,
        "train_fraction": TRAIN_FRACTION,
    }

    def sample_config(self, rng):
        return {
            "dataset": choice(rng, data.CLASSIFICATION),
            "hidden": list(choice(rng, HIDDEN)),
            "activation": choice(rng, ACTS),
            "batch_size": choice(rng, BATCH),
            "train_fraction": choice(rng, TRAIN_FRACTION),
            **init_hparams(rng),
        }

    def build(self, config, *, data_dir=None):
        name = config["dataset"]
        if name in data.REAL_DATASETS:
            ds = data.real(name, None if data_dir is None else str(data_dir), flat=True)
        else:
            ds = data.classification(name)
        spec = MLPClassifierSpec(
            in_dim=ds["train"]["x"].shape[1], hidden=tuple(config["hidden"]),
            num_classes=data.num_classes(config["dataset"]), activation=config["activation"],
            batch_size=config["batch_size"])
        rows = len(ds["train"]["y"])
        n_train = min(rows, max(spec.batch_size, int(config["train_fraction"] * rows)))
        hp = {"init_kind": config["init_kind"], "init_scale": config["init_scale"],
              "n_train": n_train}
        return TaskParts(spec, hp, ds)


assert set(ACTS) <= set(ACTIVATIONS)

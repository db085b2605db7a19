"""Meta-training configuration: a dataclass, read from TOML and overridden by flags, validated
before any compute starts."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

from lopt.meta.estimators import ESTIMATORS

OPTIMIZERS = ("hierarchical", "mlp", "learned_adam")
OBJECTIVES = ("outer_valid", "train")
NORMALISERS = ("baselines", "initial")


@dataclasses.dataclass
class MetaTrainConfig:
    optimizer: str = "hierarchical"  # architecture to meta-train
    optimizer_config: dict = dataclasses.field(default_factory=dict)  # its config fields
    # Start from this weights file's theta instead of a random one (same architecture; its
    # config may differ in scalars such as step_mult). The outer optimizer starts fresh.
    init_weights: str | None = None
    families: list = dataclasses.field(default_factory=lambda: ["mlp"])
    num_pools: int = 2  # shape buckets unrolled each outer step
    pairs: int = 8  # antithetic pairs per pool (2 x pairs particles)
    max_tasks_per_pool: int = 64
    # Every this many outer steps a pool moves to another shape bucket of its family (staggered
    # over pools; 0 = never). Buckets hold few tasks, so rotation is what gives task diversity.
    rotate_every: int = 0
    estimator: str = "pes"
    sigma: float = 0.01
    truncation: int = 50
    horizon: int = 2000  # longest inner run; lengths are log-uniform up to it
    min_length: int = 100
    objective: str = "outer_valid"
    loss_clip: float = 2.0  # normalised meta-loss is clipped to [-clip, clip]
    # Share of inner runs given the training loss alone (no validation loss), so that the
    # optimizer also learns to work as most optax users call it.
    train_only_fraction: float = 0.0
    outer_lr: float = 3e-4
    outer_clip: float = 0.1
    # Top-level theta entries the outer optimizer updates (None: all); the others stay frozen,
    # e.g. ["align"] to meta-train only inputs added to meta-trained weights.
    trainable: list | None = None
    outer_steps: int = 1000
    # Phase 1 of the curriculum: short truncations with antithetic ES for the first steps.
    warmup_steps: int = 0
    warmup_truncation: int = 10
    warmup_estimator: str = "es"
    seed: int = 0
    normalise: str = "baselines"  # "baselines" (from the store) or "initial" (loss / init)
    store: str | None = None  # baseline store folder (default: $LOPT_STORE or ~/.cache)
    fill_baselines: bool = False  # run missing tuned-Adam baselines before meta-training
    checkpoint_every: int = 25
    # Keep theta at every multiple of this many steps in snapshots/stepN.safetensors (0: off),
    # for averaging checkpoints (scripts/soup.py) and for choosing among them later.
    snapshot_every: int = 0
    eval_every: int = 100
    eval_tasks: int = 4
    eval_steps: int = 500

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "MetaTrainConfig":
        path = Path(path)
        if not path.exists():
            raise ValueError(f"config file {path} does not exist")
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"config file {path} is not valid TOML: {e}") from e
        return cls.from_dict({**values, **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "MetaTrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; allowed: {sorted(names)}")
        config = cls(**{k: v for k, v in values.items() if v is not None})
        config.validate()
        return config

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    def validate(self) -> None:
        """Raises ValueError naming the first bad value and what is allowed."""
        from lopt.tasks import OOD_FAMILIES, family_names

        def need(cond, msg):
            if not cond:
                raise ValueError(msg)

        need(self.optimizer in OPTIMIZERS,
             f"optimizer {self.optimizer!r} is unknown; allowed: {', '.join(OPTIMIZERS)}")
        for name in (self.estimator, self.warmup_estimator):
            need(name in ESTIMATORS,
                 f"estimator {name!r} is unknown; allowed: {', '.join(ESTIMATORS)}")
        need(self.objective in OBJECTIVES,
             f"objective {self.objective!r} is unknown; allowed: {', '.join(OBJECTIVES)}")
        need(self.normalise in NORMALISERS,
             f"normalise {self.normalise!r} is unknown; allowed: {', '.join(NORMALISERS)}")
        need(isinstance(self.families, list) and self.families, "families must be a non-empty list")
        for f in self.families:
            need(f in family_names(), f"family {f!r} is unknown; allowed: {', '.join(family_names())}")
            need(f not in OOD_FAMILIES,
                 f"family {f!r} is out-of-distribution: meta-training never sees it")
        if self.init_weights is not None:
            need(Path(self.init_weights).is_file(),
                 f"init_weights file {self.init_weights} does not exist")
        need(self.sigma > 0, f"sigma must be positive, got {self.sigma}")
        for name in ("num_pools", "pairs", "max_tasks_per_pool", "truncation", "horizon",
                     "min_length", "outer_steps", "checkpoint_every", "eval_every",
                     "warmup_truncation", "eval_tasks", "eval_steps"):
            value = getattr(self, name)
            need(isinstance(value, int) and value > 0,
                 f"{name} must be a positive integer, got {value!r}")
        need(isinstance(self.rotate_every, int) and self.rotate_every >= 0,
             f"rotate_every must be an integer >= 0, got {self.rotate_every!r}")
        need(isinstance(self.snapshot_every, int) and self.snapshot_every >= 0,
             f"snapshot_every must be an integer >= 0, got {self.snapshot_every!r}")
        need(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        for name in ("truncation", "warmup_truncation", "min_length"):
            need(getattr(self, name) <= self.horizon,
                 f"{name} ({getattr(self, name)}) is longer than the horizon ({self.horizon})")
        need(self.outer_lr > 0, f"outer_lr must be positive, got {self.outer_lr}")
        need(self.outer_clip > 0, f"outer_clip must be positive, got {self.outer_clip}")
        need(0 <= self.train_only_fraction <= 1,
             f"train_only_fraction must be in [0, 1], got {self.train_only_fraction}")
        need(self.trainable is None or (isinstance(self.trainable, list) and self.trainable
                                        and all(isinstance(k, str) for k in self.trainable)),
             f"trainable must be a non-empty list of theta entries, got {self.trainable!r}")
        need(self.loss_clip > 0, f"loss_clip must be positive, got {self.loss_clip}")

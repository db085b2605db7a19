"""The meta-training loop: workers estimate, the learner applies; checkpoints, metrics, evals.

A run folder holds ``config.json``, ``metrics.jsonl`` (one JSON object per outer step, appended
and flushed), ``checkpoint.npz`` (atomic), ``theta.safetensors`` (the latest weights, a normal
lopt weights file) and, with ``snapshot_every``, ``snapshots/stepN.safetensors``; a run
warm-started from ``init_weights`` also keeps that file's model card as it was when the run
began (``init_card.json``), since the file itself may be overwritten later.
``meta_train(config, run_dir)`` starts a run; ``resume(run_dir)`` continues one from its last
checkpoint.
"""

from __future__ import annotations

import functools
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.meta.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from lopt.meta.config import MetaTrainConfig
from lopt.meta.learner import Learner
from lopt.meta.worker import UnrollConfig, Worker, build_pools
from lopt.progress import progress_bar
from lopt.tasks.base import Task, eval_split

CHECKPOINT = "checkpoint.npz"
#: The learner alone (theta, outer optimizer, step): small enough to commit. Resuming from it
#: starts fresh inner runs (and PES accumulators) at the saved step.
LEARNER_CHECKPOINT = "learner.npz"
#: The model card of ``init_weights`` when the run started (``record_start``).
INIT_CARD = "init_card.json"


def make_learned(name: str, config: dict | None = None):
    """The learned-optimizer architecture ``name`` with config fields ``config``."""
    from lopt.weights import architectures

    values = {k: tuple(v) if isinstance(v, list) else v for k, v in (config or {}).items()}
    try:
        return architectures()[name](**values)
    except TypeError as e:
        raise ValueError(f"optimizer_config does not fit {name!r}: {e}") from e


def initial_theta(learned, config: MetaTrainConfig):
    """A random theta from ``config.seed``, or the theta of ``config.init_weights``."""
    if config.init_weights is None:
        return learned.init(jax.random.key(config.seed))
    from lopt.weights import load

    theta, _, _ = load(config.init_weights, architecture=learned.name)
    fresh = learned.init(jax.random.key(config.seed))
    # Top-level entries the file lacks (inputs the config adds, such as the hierarchical
    # optimizer's ``alignment``, whose init is zero: the file's updates are unchanged) come
    # from init.
    theta = {**fresh, **theta}
    want = jax.eval_shape(lambda: fresh)
    if jax.tree_util.tree_map(jnp.shape, theta) != jax.tree_util.tree_map(jnp.shape, want):
        raise ValueError(f"init_weights {config.init_weights} does not fit optimizer_config "
                         f"{config.optimizer_config}: its sizes differ")
    return theta


def family_buckets(config: MetaTrainConfig, group: str = "meta_train"
                   ) -> dict[str, list[list[Task]]]:
    """Per configured family, its shape buckets in ``group`` (largest first, ties by task id),
    each a list of tasks sorted by id and capped at ``max_tasks_per_pool``."""
    from lopt.tasks.taskset import task_set

    buckets: dict[Any, list[Task]] = defaultdict(list)
    for t in task_set(group, families=config.families):
        buckets[t.bucket].append(t)
    out: dict[str, list[list[Task]]] = {f: [] for f in config.families}
    for ts in sorted(buckets.values(), key=lambda ts: (-len(ts), min(t.id for t in ts))):
        out[ts[0].family].append(sorted(ts, key=lambda t: t.id)[: config.max_tasks_per_pool])
    return {f: b for f, b in out.items() if b}


def slot_epoch(config: MetaTrainConfig, slot: int, step: int) -> int:
    """How many times pool ``slot`` has rotated by outer step ``step`` (slots are staggered so
    that at most one recompiles at a time)."""
    if config.rotate_every <= 0:
        return 0
    offset = slot * config.rotate_every // config.num_pools
    return (step + offset) // config.rotate_every


def slot_tasks(config: MetaTrainConfig, buckets: dict[str, list[list[Task]]], slot: int,
               epoch: int) -> list[Task]:
    """The tasks of pool ``slot`` in rotation ``epoch``.

    Slots go round-robin over the families; in epoch 0 a slot holds its family's next-largest
    bucket, later epochs draw a bucket at random (weighted by its task count, seeded)."""
    families = list(buckets)
    family = families[slot % len(families)]
    options = buckets[family]
    if epoch == 0:
        return options[(slot // len(families)) % len(options)]
    rng = np.random.default_rng([config.seed, slot, epoch])
    weights = np.array([len(ts) for ts in options], float)
    return options[int(rng.choice(len(options), p=weights / weights.sum()))]


def select_tasks(config: MetaTrainConfig, group: str = "meta_train", *,
                 step: int = 0) -> list[list[Task]]:
    """The tasks of each of the ``num_pools`` pools at outer step ``step``."""
    buckets = family_buckets(config, group)
    if not buckets:
        return []
    return [slot_tasks(config, buckets, i, slot_epoch(config, i, step))
            for i in range(config.num_pools)]


@functools.partial(jax.jit, static_argnums=0)
def _initial_loss(spec, hp, data, key):
    """Loss at initialisation on the train split's fixed evaluation batch (one program per
    shape bucket, rather than hundreds of eagerly dispatched ones)."""
    params = spec.init(hp, key)
    return spec.loss(hp, params, eval_split(spec, hp, data, "train", 256), jax.random.key(0))


def normalisers(tasks: list[Task], config: MetaTrainConfig, *, num_steps: int,
                progress: bool = False) -> dict[str, tuple[float, float]]:
    """(initial loss, best baseline loss) per task: from the baseline store, or (loss at init,
    0) when ``normalise == "initial"``."""
    if config.normalise == "initial":
        key = jax.random.key(config.seed)
        return {t.id: (float(_initial_loss(t.spec, t.hparams, t.data, key)), 0.0) for t in tasks}
    from lopt.evaluate import BaselineStore, best_loss, fill_store, initial_loss

    store = BaselineStore(config.store, num_steps=num_steps)
    missing = [t for t in tasks if store.missing(t, ["adam_tuned"])]
    if missing and not config.fill_baselines:
        raise ValueError(
            f"the baseline store {store.folder} has no tuned-Adam baselines for {len(missing)} "
            f"of the {len(tasks)} tasks at {num_steps} steps (e.g. {missing[0].id}); run with "
            "--fill-baselines, or set normalise = \"initial\"")
    if missing:
        fill_store(missing, store, names=["adam_tuned"], seed=config.seed, progress=progress)
    records = {t.id: store.get(t) for t in tasks}
    return {i: (initial_loss(r), best_loss(r)) for i, r in records.items()}


class MetaTrainer:
    """Builds workers and the learner from a config; runs, checkpoints and resumes."""

    def __init__(self, config: MetaTrainConfig, run_dir: str | Path, *, progress: bool = True):
        config.validate()
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.learned = make_learned(config.optimizer, config.optimizer_config)
        self.buckets = family_buckets(config)
        if not self.buckets:
            raise ValueError(f"no meta-train tasks in families {config.families}")
        self.epochs = [0] * config.num_pools
        pools = [self._pool(slot_tasks(config, self.buckets, i, 0)) for i in range(config.num_pools)]
        self.worker = Worker(self.learned, pools, self.unroll_config(0), seed=config.seed,
                             families=[p.task_ids[0].split("/")[0] for p, _ in pools])
        theta = initial_theta(self.learned, config)
        self.learner = Learner(theta, learning_rate=config.outer_lr, clip=config.outer_clip,
                               trainable=config.trainable)
        self.worker.init(theta)
        self.step = 0
        self.wall = 0.0
        self.eval_tasks = self._eval_tasks()
        if config.normalise == "baselines" and config.fill_baselines:
            from lopt.evaluate import BaselineStore, fill_store

            fill_store([t for ts in self.eval_tasks for t in ts],
                       BaselineStore(config.store, num_steps=config.eval_steps),
                       names=["adam_tuned"], seed=config.seed, progress=progress)

    def _pool(self, tasks: list[Task]):
        norms = normalisers(tasks, self.config, num_steps=self.config.horizon,
                            progress=self.progress)
        (pool,) = build_pools(tasks, norms, self.config.pairs)
        return pool

    def rotate(self, step: int) -> None:
        """Moves every pool to the bucket it holds at outer ``step`` (fresh runs where it
        changes; a no-op without rotation)."""
        for i in range(self.config.num_pools):
            epoch = slot_epoch(self.config, i, step)
            if epoch != self.epochs[i]:
                tasks = slot_tasks(self.config, self.buckets, i, epoch)
                self.worker.replace_pool(i, self._pool(tasks), self.learner.theta,
                                         seed=hash((self.config.seed, i, epoch)) % 2**31)
                self.epochs[i] = epoch

    def unroll_config(self, step: int) -> UnrollConfig:
        c = self.config
        warm = step < c.warmup_steps
        return UnrollConfig(
            estimator=c.warmup_estimator if warm else c.estimator, sigma=c.sigma,
            truncation=c.warmup_truncation if warm else c.truncation, horizon=c.horizon,
            min_length=c.min_length, objective=c.objective, clip=c.loss_clip,
            train_only_fraction=c.train_only_fraction)

    # -- checkpoints ------------------------------------------------------------------------

    def _state(self):
        return {"learner": self.learner.state_dict(), "worker": self.worker.state_dict()}

    def save(self) -> None:
        meta = {"step": self.step, "wall": self.wall}
        save_checkpoint(self.run_dir / LEARNER_CHECKPOINT, self.learner.state_dict(), meta)
        save_checkpoint(self.run_dir / CHECKPOINT, self._state(), meta)
        self.save_theta(self.run_dir / "theta.safetensors")

    def save_theta(self, path: Path) -> None:
        """Writes the current theta as a lopt weights file whose card records the step."""
        from lopt.weights import save

        save(path, self.learner.theta, self.learned,
             provenance={"outer_steps": self.step, "config": json.loads(self.config.to_json())})

    def restore(self) -> None:
        """Restores the full checkpoint, or, where only the learner's was kept (a run copied
        from another machine), the learner with fresh inner runs."""
        full = (self.run_dir / CHECKPOINT).exists()
        path = self.run_dir / (CHECKPOINT if full else LEARNER_CHECKPOINT)
        step = int(read_checkpoint_meta(path)["step"])
        self.rotate(step)
        if full:
            tree, meta = load_checkpoint(path, self._state())
            self.learner.load_state_dict(tree["learner"])
            self.worker.load_state_dict(tree["worker"])
        else:
            tree, meta = load_checkpoint(path, self.learner.state_dict())
            self.learner.load_state_dict(tree)
            self.worker.calls = step  # new runs and estimate keys, still reproducible
            self.worker.init(self.learner.theta, seed=self.config.seed + 7919 * step)
        self.step, self.wall = int(meta["step"]), float(meta["wall"])

    # -- the loop ---------------------------------------------------------------------------

    def run(self, until: int | None = None) -> Learner:
        """Runs outer steps up to ``until`` (default: the config's ``outer_steps``)."""
        until = self.config.outer_steps if until is None else until
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.json").write_text(self.config.to_json())
        bar = progress_bar(self.progress, "meta-loss {task.fields[loss]:.4f}")
        with bar, open(self.run_dir / "metrics.jsonl", "a") as log:
            job = bar.add_task("meta-train", total=until, completed=self.step, loss=float("nan"))
            while self.step < until:
                t0 = time.perf_counter()
                self.worker.config = self.unroll_config(self.step)
                est = self.worker.estimate(self.learner.theta, self.learner.version)
                applied = self.learner.apply([est])
                self.step += 1
                self.rotate(self.step)  # before any checkpoint, so it holds the new pools
                dt = time.perf_counter() - t0
                self.wall += dt
                record = {"step": self.step, **est.metrics, **applied,
                          "inner_steps_per_s": est.metrics["inner_steps"] / dt,
                          "truncation": self.worker.config.truncation,
                          "estimator": self.worker.config.estimator, "wall_time": self.wall}
                if self.step % self.config.eval_every == 0 or self.step == until:
                    record.update(self.evaluate())
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.update(job, completed=self.step, loss=record["meta_loss"])
                if self.step % self.config.checkpoint_every == 0 or self.step == until:
                    self.save()
                if self.config.snapshot_every and self.step % self.config.snapshot_every == 0:
                    self.save_theta(self.run_dir / "snapshots" / f"step{self.step}.safetensors")
        return self.learner

    # -- periodic evaluation ----------------------------------------------------------------

    def _eval_tasks(self) -> list[list[Task]]:
        """A fixed evaluation set: the largest held-out bucket of each family."""
        held = family_buckets(self.config, group="held_out")
        return [buckets[0][: self.config.eval_tasks] for buckets in held.values()]

    def evaluate(self) -> dict[str, float]:
        """Mean training loss over ``eval_steps`` on held-out tasks, relative to the loss at
        initialisation (lower is better; Adam at 1e-3 is reported alongside for scale)."""
        from lopt.train import train_many

        c = self.config
        out, ours, adam, normalised = {}, [], [], []
        records = self._eval_records()
        for tasks in self.eval_tasks:
            n = len(tasks)
            keys = jax.random.split(jax.random.key(c.seed + 17), n)
            thetas = jax.tree_util.tree_map(lambda a: jnp.stack([a] * n), self.learner.theta)
            r = train_many(tasks, self.learned.optimizer, c.eval_steps, keys, opt_hparams=thetas,
                           eval_splits=("train",), eval_every=c.eval_steps, valid_every=10)
            a = train_many(tasks, EVAL_ADAM, c.eval_steps, keys,
                           eval_splits=("train",), eval_every=c.eval_steps)
            for res, sink in ((r, ours), (a, adam)):
                init = np.asarray(res.eval_loss["train"][:, 0], np.float64)
                ratio = np.asarray(res.train_loss, np.float64).mean(axis=1) / init
                sink.extend(np.where(np.isfinite(ratio), np.minimum(ratio, 1.0), 1.0))
            out.setdefault("eval/diverged", 0)
            out["eval/diverged"] += int(np.sum(np.asarray(r.diverged)))
            mean = np.asarray(r.train_loss).mean(axis=1)
            for task, m in zip(tasks, mean):
                if records.get(task.id):
                    normalised.append(_normalised(records[task.id], m))
        if ours:
            out["eval/relative_loss"] = float(np.mean(ours))
            out["eval/adam_1e-3_relative_loss"] = float(np.mean(adam))
        if normalised:  # 0 = best stored baseline, 1 = initial; tuned Adam's score beside it
            out["eval/normalised_loss"] = float(np.mean([n[0] for n in normalised]))
            out["eval/adam_tuned_normalised_loss"] = float(np.mean([n[1] for n in normalised]))
        return out

    def _eval_records(self) -> dict:
        """Stored baselines of the evaluation tasks at ``eval_steps`` (those present)."""
        if self.config.normalise != "baselines":
            return {}
        from lopt.evaluate import BaselineStore

        store = BaselineStore(self.config.store, num_steps=self.config.eval_steps)
        return {t.id: store.get(t) for ts in self.eval_tasks for t in ts}


#: One object, so that its compiled evaluation programs are found again in the cache.
EVAL_ADAM = optax.adam(1e-3)


def _normalised(record, mean_loss) -> tuple[float, float]:
    from lopt.evaluate import best_loss, initial_loss, normalise

    init, best = initial_loss(record), best_loss(record)
    tuned = record["baselines"]["adam_tuned"]["mean_loss"]
    return float(normalise(mean_loss, init, best)), float(normalise(tuned, init, best))



def meta_train(config: MetaTrainConfig, run_dir: str | Path, *, progress: bool = True) -> Learner:
    """Starts a new meta-training run in ``run_dir`` (which must not hold a checkpoint)."""
    if _has_checkpoint(Path(run_dir)):
        raise ValueError(f"{run_dir} already holds a run; resume it with --resume {run_dir}")
    trainer = MetaTrainer(config, run_dir, progress=progress)
    record_start(config, run_dir)
    return trainer.run()


def record_start(config: MetaTrainConfig, run_dir: str | Path) -> None:
    """Writes ``init_weights``' model card and SHA-256 to ``run_dir/init_card.json``, so the
    run's lineage stays known when that file is later overwritten (as shipping does)."""
    if config.init_weights is None:
        return
    import hashlib

    from lopt.atomic import atomic_write_text
    from lopt.weights import read

    _, _, card = read(config.init_weights)
    digest = hashlib.sha256(Path(config.init_weights).read_bytes()).hexdigest()
    record = {"weights": config.init_weights, "sha256": digest, "card": card}
    atomic_write_text(Path(run_dir) / INIT_CARD, json.dumps(record, indent=1) + "\n")


def resume(run_dir: str | Path, *, outer_steps: int | None = None,
           progress: bool = True) -> Learner:
    """Continues the run in ``run_dir`` from its last checkpoint (optionally for longer)."""
    run_dir = Path(run_dir)
    if not _has_checkpoint(run_dir):
        raise ValueError(f"{run_dir} holds no checkpoint to resume")
    values = json.loads((run_dir / "config.json").read_text())
    if outer_steps is not None:
        values["outer_steps"] = outer_steps
    trainer = MetaTrainer(MetaTrainConfig.from_dict(values), run_dir, progress=progress)
    trainer.restore()
    _truncate_metrics(run_dir / "metrics.jsonl", trainer.step)
    return trainer.run()


def _has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT).exists() or (run_dir / LEARNER_CHECKPOINT).exists()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drops metric lines written after the checkpoint (they will be recomputed)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError):
            break  # a line cut by the kill
    from lopt.atomic import atomic_write_text

    atomic_write_text(path, "".join(k + "\n" for k in keep))

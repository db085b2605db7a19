"""The baseline store: per-task baseline results on disk, so evaluating a new optimizer costs one
run per task.

Layout: ``<root>/v<STORE_VERSION>/steps-<num_steps>/<task id>.json``, one file per task holding
every baseline's summary. The root is ``$LOPT_STORE`` or ``~/.cache/lopt/baselines``. Each
record carries the task's fingerprint; a record whose fingerprint no longer matches the task (the
family changed) is treated as missing. Writes go to a temporary file that is renamed over the
old one, so an interrupted write leaves the previous record intact.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

from lopt.atomic import atomic_write_text
from lopt.tasks.base import Task

STORE_VERSION = 1


def default_root() -> Path:
    return Path(os.environ.get("LOPT_STORE", Path.home() / ".cache" / "lopt" / "baselines"))


class BaselineStore:
    """Reads and writes baseline records for one training length."""

    def __init__(self, root: str | os.PathLike | None = None, *, num_steps: int,
                 fallback: str | os.PathLike | None = None):
        """``fallback`` is a read-only store root consulted when ``root`` has no record (lopt
        ships the held-out tasks' baselines this way, see ``lopt.pretrained.BASELINES``)."""
        if not isinstance(num_steps, int) or num_steps <= 0:
            raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
        self.root = Path(root) if root is not None else default_root()
        self.num_steps = num_steps
        self.folder = self.root / f"v{STORE_VERSION}" / f"steps-{num_steps}"
        self.fallback = (None if fallback is None else
                         BaselineStore(fallback, num_steps=num_steps))

    def path(self, task_id: str) -> Path:
        return self.folder / (task_id.replace("/", "__") + ".json")

    def get(self, task: Task) -> dict[str, Any] | None:
        """The stored record of ``task``, or None if absent or stale."""
        record = self._read(task)
        if record is None and self.fallback is not None:
            return self.fallback.get(task)
        return record

    def _read(self, task: Task) -> dict[str, Any] | None:
        path = self.path(task.id)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"baseline store file {path} is corrupt: {e}") from e
        if record.get("fingerprint") != task.fingerprint():
            return None
        return record

    def put(self, task: Task, baselines: dict[str, Any], *, seed: int) -> dict[str, Any]:
        """Stores (merging with any existing record) the baselines of ``task``."""
        from lopt import __version__

        record = self.get(task)
        record = dict(record) if record else {
            "task_id": task.id, "family": task.family, "config": dict(task.config),
            "fingerprint": task.fingerprint(), "num_steps": self.num_steps, "seed": seed,
            "store_version": STORE_VERSION, "baselines": {}}
        record["baselines"].update(baselines)
        record["lopt_version"] = __version__
        atomic_write_text(self.path(task.id), json.dumps(record, indent=1))
        return record

    def missing(self, task: Task, names: Iterable[str]) -> list[str]:
        record = self.get(task)
        have = set(record["baselines"]) if record else set()
        return [n for n in names if n not in have]

    def task_ids(self) -> list[str]:
        if not self.folder.exists():
            return []
        return sorted(p.stem.replace("__", "/") for p in self.folder.glob("*.json"))


def best_loss(record: dict[str, Any]) -> float:
    """The lowest loss any stored baseline reached on the task (the 0 of normalised loss)."""
    values = [b["best_loss"] for b in record["baselines"].values()]
    for b in record["baselines"].values():
        values += b.get("sweep", {}).get("best_loss", [])
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return min(finite) if finite else float("nan")


def initial_loss(record: dict[str, Any]) -> float:
    """The task's loss at initialisation (the 1 of normalised loss)."""
    return next(iter(record["baselines"].values()))["initial_loss"]

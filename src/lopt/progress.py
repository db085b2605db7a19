"""One rich progress bar style for every long job (baselines, benchmarks, meta-training)."""

from __future__ import annotations


def progress_bar(enabled: bool = True, *fields: str):
    """A ``rich`` Progress: description, bar, done/total, ``fields`` (extra format strings such
    as ``"loss {task.fields[loss]:.4f}"``), elapsed and remaining time. Disabled: silent."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    *(TextColumn(f) for f in fields), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=not enabled)

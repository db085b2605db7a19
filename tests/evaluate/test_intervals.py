"""Intervals over tasks: Wilson's interval at known values, a bootstrap that covers the mean
difference and narrows with more tasks, and the report's "how sure" table."""

import math

import numpy as np
import pytest

from lopt.evaluate.intervals import (mean_difference_interval, task_intervals,
                                     win_fraction_interval)
from lopt.evaluate.report import markdown


def test_wilson_interval_matches_known_values():
    assert win_fraction_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    low, high = win_fraction_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.2775, abs=1e-4)
    assert all(math.isnan(x) for x in win_fraction_interval(0, 0))
    with pytest.raises(ValueError, match="wins <= tasks"):
        win_fraction_interval(4, 3)


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_tasks():
    rng = np.random.default_rng(1)
    baseline = rng.uniform(0, 0.1, 2000)
    ours = baseline + 0.01 + rng.normal(0, 0.02, 2000)
    few = mean_difference_interval(ours[:40], baseline[:40])
    many = mean_difference_interval(ours, baseline)
    for (low, high), n in ((few, 40), (many, 2000)):
        assert low < np.mean(ours[:n] - baseline[:n]) < high
    assert many[1] - many[0] < 0.3 * (few[1] - few[0])  # width shrinks about as 1/sqrt(n)
    assert many[0] > 0  # a clear shift excludes 0
    assert mean_difference_interval(ours[:40], baseline[:40]) == few  # seeded


def test_bootstrap_interval_of_degenerate_samples():
    assert mean_difference_interval([0.3, 0.3, 0.3], [0.1, 0.1, 0.1]) == pytest.approx((0.2, 0.2))
    assert all(math.isnan(x) for x in mean_difference_interval([0.3], [0.1]))
    with pytest.raises(ValueError, match="one score per task"):
        mean_difference_interval([[0.3]], [[0.1]])


def _rows(ours, tuned):
    return [{"normalised": o, "adam_tuned": t, "adam_global": t + 0.1, "win_tuned": o < t,
             "win_global": o < t + 0.1} for o, t in zip(ours, tuned)]


def test_task_intervals_and_the_report_table():
    rng = np.random.default_rng(2)
    tuned = rng.uniform(0.1, 0.3, 20)
    ours = tuned - rng.uniform(0.01, 0.1, 20)
    ours[-1] = tuned[-1] + 0.2  # 19 of 20 wins
    rows = _rows(ours, tuned)
    iv = task_intervals(rows)
    assert iv["wins_tuned"] == pytest.approx(win_fraction_interval(19, 20))
    assert iv["wins_global"] == pytest.approx(win_fraction_interval(19, 20))
    low, high = iv["difference_tuned"]
    assert low < np.mean(ours - tuned) < high
    # global Adam is tuned Adam + 0.1 on every task: the same resamples, shifted
    assert iv["difference_global"] == pytest.approx((low - 0.1, high - 0.1), abs=1e-6)

    summary = {"tasks": 20, "mean_normalised": 0.12, "adam_tuned_mean_normalised": 0.2,
               "adam_global_mean_normalised": 0.3, "win_fraction_tuned": 0.95,
               "win_fraction_global": 0.95, "median_speedup": 2.0, "diverged_fraction": 0.0}
    results = {"num_steps": 10, "adam_global_lr": 0.01, "modes": {
        "valid": {"summary": summary, "by_family": {}, "tasks": rows}}}
    text = markdown(results, title="t")
    wl, wh = win_fraction_interval(19, 20)
    assert (f"| fed validation loss every 10 steps | -0.0800 [{low:+.4f}, {high:+.4f}] | "
            f"-0.1800 [{low - 0.1:+.4f}, {high - 0.1:+.4f}] |" in text)
    assert f"| 95% [{wl:.0%}, {wh:.0%}] |" in text
    del results["modes"]["valid"]["tasks"]  # summaries without per-task rows: no table
    assert "How sure" not in markdown(results, title="t")

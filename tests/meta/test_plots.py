import json

import pytest

from lopt.meta.plots import plot_run, read_metrics


def _row(step, **extra):
    return {"step": step, "meta_loss": 1.0 / step, "meta_loss/mlp": 0.5 / step,
            "estimate_norm": 0.1, "inner_steps_per_s": 100.0, **extra}


def _write(tmp_path, rows, tail=""):
    text = "".join(json.dumps(r) + "\n" for r in rows) + tail
    (tmp_path / "metrics.jsonl").write_text(text)


def test_read_metrics_stops_at_a_line_cut_by_a_kill(tmp_path):
    _write(tmp_path, [_row(1), _row(2)], tail='{"step": 3, "meta_lo')
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


@pytest.mark.parametrize("evaluated", [False, True])
def test_plot_run_writes_a_png_with_or_without_evaluations(tmp_path, evaluated):
    rows = [_row(s) for s in range(1, 30)]
    if evaluated:
        rows[9].update({"eval/relative_loss": 0.3, "eval/adam_1e-3_relative_loss": 0.4})
    _write(tmp_path, rows)
    out = plot_run(tmp_path)
    assert out == tmp_path / "meta_training.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_run_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(ValueError, match="no metrics.jsonl"):
        plot_run(tmp_path)
    _write(tmp_path, [])
    with pytest.raises(ValueError, match="empty"):
        plot_run(tmp_path)

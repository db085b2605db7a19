"""The command line: listing tasks, bad input, the main job's argument handling."""

import json

import pytest

from lopt import cli


def test_tasks_lists_and_filters(capsys):
    assert cli.main(["tasks", "--family", "quadratic", "--group", "held_out", "--json",
                     "--limit", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3
    assert all(r["family"] == "quadratic" and r["group"] == "held_out" for r in rows)


def test_unknown_family_is_one_clear_error(capsys):
    assert cli.main(["tasks", "--family", "cnn"]) == 2
    err = capsys.readouterr().err
    assert "unknown task family 'cnn'" in err and "allowed" in err


def test_bad_step_count_is_rejected():
    with pytest.raises(SystemExit):
        cli.main(["baselines", "--steps", "0"])


def test_bare_flags_run_the_main_job(tmp_path, capsys):
    code = cli.main(["--weights", str(tmp_path / "missing.safetensors"), "--steps", "10",
                     "--store", str(tmp_path), "--no-progress"])
    assert code == 2
    assert "no weights file" in capsys.readouterr().err


def test_benchmark_end_to_end(tmp_path, capsys):
    from lopt.optimizers import LearnedAdam
    from lopt.weights import save

    save(tmp_path / "adam.safetensors", LearnedAdam().init(), LearnedAdam())
    out = tmp_path / "report"
    assert cli.main(["benchmark", "--weights", str(tmp_path / "adam.safetensors"), "--family",
                     "test_function", "--steps", "40", "--store", str(tmp_path / "store"),
                     "--out", str(out), "--mode", "train_only", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["modes"]) == ["train_only"]
    assert results["modes"]["train_only"]["summary"]["tasks"] == 2  # --per-family default
    assert all(t["family"] == "test_function" for t in results["modes"]["train_only"]["tasks"])
    assert (out / "differences.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "summary.md" in printed and "wins vs tuned Adam" in printed
    from lopt.evaluate.intervals import task_intervals

    low, high = task_intervals(results["modes"]["train_only"]["tasks"])["wins_tuned"]
    assert "wins vs tuned Adam, 95%" in printed and f"[{low:.0%}, {high:.0%}]" in printed
    assert f"[{low:.0%}, {high:.0%}]" in (out / "summary.md").read_text()


def test_baselines_end_to_end(tmp_path, capsys):
    from lopt.tasks.taskset import task_set

    task = task_set("held_out", families=["test_function"])[0]
    out = tmp_path / "report"
    assert cli.main(["baselines", "--task", task.id, "--steps", "50", "--store",
                     str(tmp_path / "store"), "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "baselines.json").read_text())
    assert report["tasks"][0]["task_id"] == task.id
    assert set(report["tasks"][0]["normalised_mean_loss"]) >= {"adam_tuned", "sgdm_tuned",
                                                                "nadamw_list", "adam_global"}
    assert (out / "baselines.png").stat().st_size > 1000


def test_meta_train_flags_reach_the_config(tmp_path, monkeypatch, capsys):
    import types

    from lopt.meta import trainer

    seen = {}

    def fake_meta_train(config, run_dir, *, progress):
        seen["config"] = config
        return types.SimpleNamespace(version=0)

    monkeypatch.setattr(trainer, "meta_train", fake_meta_train)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    assert cli.main(["meta-train", "--family", "mlp", "--rotate-every", "30",
                     "--warmup-steps", "5", "--init-weights", str(weights), "--outer-lr", "0.01",
                     "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    config = seen["config"]
    assert (config.rotate_every, config.warmup_steps, config.init_weights, config.outer_lr) == (
        30, 5, str(weights), 0.01)
    assert config.families == ["mlp"]

"""`neo eval RUN --tasks ...`: metrics on stdout, results in the run directory (JSON and TensorBoard), and one line
with exit 2 for an unknown task, a task whose data is missing, or a bad --include-path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from neo.cli.app import run
from tests.eval.conftest import TinyModel

pytestmark = [pytest.mark.hf, pytest.mark.harness]


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip() and "Generating" not in line]
    assert "Traceback" not in captured.err and captured.out == ""
    assert len(lines) == 1, lines
    return lines[0]


def test_tasks_print_metrics_and_write_json_and_tensorboard(
    tiny_model: TinyModel, capsys: pytest.CaptureFixture[str]
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["eval", str(tiny_model.run_dir), "--tasks", "tiny_mc,tiny_ppl", "--include-path", str(tiny_model.tasks)]
    assert run([*args, "--limit", "5", "--batch-size", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("tiny_mc: acc 0.") and "±" in line for line in lines), lines
    assert any(line.startswith("tiny_ppl: bits_per_byte ") for line in lines), lines

    written = list((tiny_model.run_dir / "eval").glob("harness-*.json"))
    assert len(written) == 1
    saved = json.loads(written[0].read_text())
    acc = saved["results"]["tiny_mc"]["acc,none"]
    assert f"tiny_mc: acc {acc:.4f}" in lines[0] or any(f"tiny_mc: acc {acc:.4f}" in line for line in lines)
    assert saved["step"] == 0 and saved["config"]["limit"] == 5 and saved["n-samples"]["tiny_mc"]["effective"] == 5

    events = EventAccumulator(str(tiny_model.run_dir / "tensorboard"))
    events.Reload()
    assert "harness/tiny_mc/acc" in events.Tags()["scalars"]
    assert events.Scalars("harness/tiny_mc/acc")[0].value == pytest.approx(acc)


def test_unknown_task_is_one_line_naming_it(
    tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import lm_eval.tasks

    class LocalTasksOnly(lm_eval.tasks.TaskManager):  # lm-eval's own ~15,000 task YAMLs take 10-20 s to index
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**{**kwargs, "include_defaults": False})

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", LocalTasksOnly)
    args = ["eval", str(tiny_model.run_dir), "--tasks", "tiny_mc,tiny_mcq", "--include-path", str(tiny_model.tasks)]
    assert run(args) == 2
    line = _one_error_line(capsys)
    assert "unknown task 'tiny_mcq'" in line and "did you mean tiny_mc" in line and "--include-path" in line


@pytest.mark.slow  # indexes lm-eval's own tasks (10-20 s)
def test_unknown_task_among_lm_evals_own_is_one_line_with_the_closest(
    tiny_model: TinyModel, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["eval", str(tiny_model.run_dir), "--tasks", "lambada_opnai"]) == 2
    line = _one_error_line(capsys)
    assert "unknown task 'lambada_opnai'" in line and "lambada_openai" in line


def test_task_with_missing_data_is_one_line_naming_it(
    tiny_model: TinyModel, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["eval", str(tiny_model.run_dir), "--tasks", "tiny_missing", "--include-path", str(tiny_model.tasks)]
    assert run(args) == 2
    line = _one_error_line(capsys)
    assert "task 'tiny_missing'" in line and "could not be loaded" in line and "no_such_file.jsonl" in line


def test_bad_include_path_and_misplaced_flags_are_one_line(
    tiny_model: TinyModel, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["eval", str(tiny_model.run_dir), "--tasks", "x", "--include-path", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in _one_error_line(capsys)
    assert run(["eval", str(tiny_model.run_dir), "--limit", "3"]) == 2  # the held-out mode takes no --limit
    assert "--tasks" in _one_error_line(capsys)

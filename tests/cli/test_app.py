"""The `neo` command: help, config show, and how user errors and bugs surface."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from neo.cli.app import run


def test_help_lists_every_command_group(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"]) == 0
    text = capsys.readouterr().out
    for group in ("quickstart", "tokenizer", "data", "config", "train", "sample"):
        assert group in text


@pytest.mark.parametrize("command", [["train"], ["sample"], ["quickstart"], ["config", "show"], ["config", "import"]])
def test_each_command_help_has_an_example(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*command, "--help"]) == 0
    assert "Example" in capsys.readouterr().out


def test_config_show_prints_valid_yaml_with_parameter_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config", "show", "model=neo_1.3B"]) == 0
    text = capsys.readouterr().out
    parsed = yaml.safe_load(text)
    assert parsed["model"]["n_embd"] == 2048
    assert "1,315,575,808" in text


def test_bad_key_is_one_red_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config", "show", "train.stepz=3"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "train.steps" in lines[0] and "Traceback" not in captured.err


def test_a_command_parses_its_options_without_pydantic() -> None:
    """typer 0.29 validates every option through pydantic, ~0.1 s of each command's start-up (pyproject pins <0.29)."""
    code = (
        "import sys; from neo.cli.app import run; "
        "argv = ['data', 'encode', 'missing.jsonl', '--out', 'o', '--tokenizer', 'missing.json', '--mode', 'chunks']; "
        "code = run(argv); "
        "print(code, 'pydantic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["2", "False"]


def test_console_script_exit_codes_in_a_real_process() -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "neo.cli.app", "config", "show", "model=nope"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "model" in bad.stderr and "Traceback" not in bad.stderr
    usage = subprocess.run([sys.executable, "-m", "neo.cli.app", "no-such-command"], capture_output=True, text=True)
    assert usage.returncode == 2


def test_train_on_a_pod_preset_without_its_devices_points_to_dry_run(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert run(["train", "model=xl", "mesh=v3-256", "data.dir=" + str(tmp_path), "--run-dir", str(run_dir)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "needs 256 devices" in lines[0] and "--dry-run" in lines[0]
    assert "mesh=gpu" not in lines[0] and not run_dir.exists()

"""One trainer per run directory (`neo.train.run_lock`): a double launch refuses, a killed holder does not block."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from neo.cli.app import run
from neo.errors import CheckpointError
from neo.train.run_lock import run_lock

HOLD = (
    "import sys, time; from neo.train.run_lock import run_lock\n"
    "with run_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(60)"
)


def _holder(run_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_trainer_is_refused_with_the_holder_and_a_killed_holder_does_not_block(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = _holder(run_dir)
    try:
        with pytest.raises(CheckpointError, match=f"pid {holder.pid} on "), run_lock(str(run_dir)):
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a stale lock file stays behind
        holder.wait()
    with run_lock(str(run_dir)):  # the kernel released the killed holder's lock
        assert f"pid {os.getpid()}" in (run_dir / ".train.lock").read_text()


def test_neo_train_on_a_run_being_trained_exits_2_and_writes_nothing(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    holder = _holder(run_dir)
    try:
        assert run(["train", *tiny_overrides(tiny_dataset, run_dir)]) == 2
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    err = capsys.readouterr().err
    assert f"is being trained by pid {holder.pid}" in err and "Traceback" not in err
    assert sorted(p.name for p in run_dir.iterdir()) == [".train.lock"]  # no snapshot, checkpoint or metrics

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


def test_a_bucket_run_directory_is_locked_by_a_renewed_lease_that_a_dead_holder_loses(
    gcs_emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import socket
    import time

    from neo import storage
    from neo.train import run_lock as lock

    url = f"{gcs_emulator.bucket_url}/runs/leased"
    path = storage.join(url, ".train.lock")
    monkeypatch.setattr(lock, "HEARTBEAT_S", 60.0)  # nothing here is slow enough to look stale
    monkeypatch.setattr(lock, "STALE_S", 600.0)
    with run_lock(url):
        assert json.loads(storage.read_text(path))["holder"] == f"pid {os.getpid()} on {socket.gethostname()}"
        with (
            pytest.raises(CheckpointError, match=r"is being trained by pid \d+ on .* renewed \d+ s ago"),
            run_lock(url),
        ):
            pass  # a double launch: refused at once
    assert not storage.exists(path)  # released

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    here = f"pid {gone.stdout.strip()} on {socket.gethostname()}"  # a process of this host that has exited
    storage.write_atomic(path, json.dumps({"holder": here, "time": time.time()}))
    with run_lock(url):  # a fresh lease, but its holder was killed on this host: a restart takes it at once
        assert here not in storage.read_text(path)

    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.2)
    with run_lock(url):
        first = json.loads(storage.read_text(path))["time"]
        deadline = time.monotonic() + 30
        while json.loads(storage.read_text(path))["time"] == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert json.loads(storage.read_text(path))["time"] > first  # renewed while held

    storage.write_atomic(path, json.dumps({"holder": "pid 1 on gone-host", "time": time.time() - 1000}))
    with run_lock(url):  # a killed run's lease, long stale: taken over at once
        assert "gone-host" not in storage.read_text(path)

    monkeypatch.setattr(lock, "STALE_S", 8.0)
    storage.write_atomic(path, json.dumps({"holder": "pid 1 on gone-host", "time": time.time() - 2}))
    heard: list[str] = []  # renewals missed, not yet stale: wait for the lease to expire, then take it
    start = time.monotonic()
    with run_lock(url, heard.append):
        assert "gone-host" not in storage.read_text(path)
    assert heard and "pid 1 on gone-host stopped renewing it" in heard[0] and time.monotonic() - start > 3

"""`neo train` on two processes on localhost (jax.distributed, gloo): each host feeds its own rows of the global batch,
and the job's losses equal one process's on the same devices: the data does not depend on the number of hosts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pytest

from neo import storage
from neo.config import compose
from neo.train.session import build_session


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.multiprocess
def test_two_process_training_equals_one_process(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable
) -> None:
    run = tmp_path / "run"
    overrides = tiny_overrides(tiny_dataset, run, "train.steps=3", "train.checkpoint_every=3", "train.eval_steps=0")
    _finish(_launch(overrides, 2, devices_per_process=2))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    two_process = [r["loss"] for r in rows if "loss" in r]
    assert (run / "checkpoints" / "3").is_dir()

    # One process, the same 4 devices, its own input pipeline.
    cfg = compose(tiny_overrides(tiny_dataset, tmp_path / "single", "train.steps=3"))
    session = build_session(cfg, tmp_path, devices=jax.devices()[:4])
    assert session.batch_rows == range(8)
    batches = session.train_batches(0)
    state, single = session.fresh_state(), []
    for _ in range(3):
        state, metrics = session.train_step(state, session.global_batch(next(batches)))
        single.append(float(metrics["loss"]))
    np.testing.assert_allclose(two_process, single, rtol=1e-5)


def _launch(
    overrides: list[str], n: int, devices_per_process: int = 1, neo: dict[int, list[str]] | None = None
) -> list[subprocess.Popen]:
    """`neo train` as `n` processes of one job on localhost, `devices_per_process` CPU devices each; `neo` gives a
    process another command to run `neo` with (e.g. `kill_before_commit.command(step)`)."""
    port = _free_port()
    procs = []
    for pid in range(n):
        flags = f"--xla_force_host_platform_device_count={devices_per_process}"
        proc_env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        args = ["--coordinator", f"localhost:{port}", "--num-processes", str(n), "--process-id", str(pid)]
        procs.append(
            subprocess.Popen(
                [*(neo or {}).get(pid, [sys.executable, "-m", "neo.cli.app"]), "train", *args, *overrides],
                env=proc_env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def _finish(procs: list[subprocess.Popen]) -> str:
    """Wait for every process of the job; the chief's stderr (its progress lines)."""
    errs = []
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        errs.append(err)
    return errs[0]


def _losses(run: str) -> dict[int, float]:
    rows = [json.loads(line) for line in storage.read_text(storage.join(run, "metrics.jsonl")).splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.slow  # twelve `neo train` processes: ~3-5 minutes on 2 cores
@pytest.mark.multiprocess
@pytest.mark.parametrize("where", ["local", "bucket"])
def test_four_hosts_killed_mid_save_resume_from_the_last_complete_checkpoint(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable, request: pytest.FixtureRequest, where: str
) -> None:
    """A pod job loses a host while a checkpoint is written but not committed; the relaunched job resumes from the
    previous checkpoint, never the half-written one, and its losses equal an uninterrupted job's bit for bit. In the
    bucket variant the data and both run directories live in Cloud Storage (a local emulator)."""
    from tests.train import kill_before_commit

    data = {k: str(v) for k, v in tiny_dataset.items()}
    root = str(tmp_path)
    if where == "bucket":
        bucket = request.getfixturevalue("gcs_emulator").bucket
        root = f"gs://{bucket}/{tmp_path.name}"
        for split in ("train", "eval"):
            storage.upload_dir(tiny_dataset[split], storage.join(root, split))
            data[split] = storage.join(root, split)
    extra = ["train.steps=8", "train.checkpoint_every=2", "train.async_checkpointing=true", "train.eval_steps=0"]
    straight, killed = storage.join(root, "straight"), storage.join(root, "killed")
    _finish(_launch(tiny_overrides(data, straight, *extra), 4))

    procs = _launch(tiny_overrides(data, killed, *extra), 4, neo={0: kill_before_commit.command(6)})
    procs[0].wait(timeout=600)
    assert procs[0].returncode == -signal.SIGKILL, procs[0].stderr.read() if procs[0].stderr else ""
    for proc in procs[1:]:  # the rest of the job goes down with it (on a pod, the scheduler tears the slice down)
        proc.kill()
        proc.wait()
    steps = {storage.basename(p).split(".")[0] for p in storage.listdir(storage.join(killed, "checkpoints"))}
    assert "6" in steps  # the kill came while step 6 was being saved

    chief = _finish(_launch(tiny_overrides(data, killed, *extra), 4))
    assert "starting at step 4" in " ".join(chief.split())  # not from the half-written step 6
    assert _losses(killed) == _losses(straight)
    assert sorted(_losses(killed)) == list(range(1, 9))

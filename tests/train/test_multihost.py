"""`neo train` on two processes on localhost (jax.distributed, gloo): each host feeds its own rows of the global batch,
and the job's losses equal one process's on the same devices: the data does not depend on the number of hosts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pytest

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
    port = _free_port()
    procs = []
    for pid in range(2):
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
        args = ["--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(pid)]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "neo.cli.app", "train", *args, *overrides],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
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

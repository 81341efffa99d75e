"""Multi-host start-up: argument handling, and two real processes on localhost forming one mesh (gloo)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neo.errors import ConfigError
from neo.parallel import distributed

WORKER = Path(__file__).with_name("_two_process_worker.py")
REPO = Path(distributed.__file__).resolve().parents[2]  # the neo checkout the workers must import


@pytest.fixture
def fresh(monkeypatch):
    for env in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr(distributed, "_STATE", {})


def test_single_process_is_a_no_op(fresh):
    info = distributed.initialize()
    assert (info.process_index, info.process_count) == (0, 1)


def test_partial_flags_name_what_is_missing(fresh, monkeypatch):
    monkeypatch.setenv(distributed.ENV_COORDINATOR, "localhost:1234")
    with pytest.raises(ConfigError, match=r"--num-processes / NEO_NUM_PROCESSES, --process-id / NEO_PROCESS_ID"):
        distributed.initialize()
    with pytest.raises(ConfigError, match=r"process id 3 is not in 0\.\.1"):
        distributed.initialize(num_processes=2, process_id=3)
    with pytest.raises(ConfigError, match=r"must be host:port"):
        distributed.initialize(coordinator="localhost", num_processes=2, process_id=1)
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "two")
    with pytest.raises(ConfigError, match=r"NEO_NUM_PROCESSES='two' must be an integer"):
        distributed.initialize()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _slurm_port() -> int:
    """A free port in the range JAX's SLURM detection derives from the job id (61440 + id mod 4096)."""
    for port in range(61440 + os.getpid() % 4096, 65536):
        with socket.socket() as s:
            try:
                s.bind(("localhost", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 61440..65535")


def _job_env(launcher: str, pid: int, port: int) -> dict[str, str]:
    """What each launcher puts in a process's environment: neo's own variables, or a SLURM step (`srun`)."""
    if launcher == "neo":
        return {"NEO_COORDINATOR": f"localhost:{port}", "NEO_NUM_PROCESSES": "2", "NEO_PROCESS_ID": str(pid)}
    return {
        "SLURM_JOB_ID": str(port - 61440),
        "SLURM_STEP_NODELIST": "localhost",
        "SLURM_NTASKS": "2",
        "SLURM_PROCID": str(pid),
        "SLURM_LOCALID": str(pid),
    }


@pytest.mark.multiprocess
@pytest.mark.parametrize("launcher", ["neo", "slurm"])
def test_two_processes_build_one_global_mesh(launcher: str):
    """Two processes join one job from their environment alone: neo's variables, or SLURM's (no flags at all)."""
    port = _free_port() if launcher == "neo" else _slurm_port()
    procs = []
    for pid in range(2):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "NEO_"))}
        env.update(
            XLA_FLAGS="--xla_force_host_platform_device_count=2",
            JAX_PLATFORMS="cpu",
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            **_job_env(launcher, pid, port),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    full = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert sorted(r["process"] for r in results) == [0, 1]
    for r in results:
        assert r["count"] == 2 and r["devices"] == 4 and r["local"] == 2 and r["mesh"] == {"x": 4}
        assert r["total"] == pytest.approx(float(full.sum()))
        assert r["psum"] == pytest.approx(full.sum(axis=0).tolist())

"""Multi-host start-up: one call before any JAX work turns N processes into one set of global devices.

The coordinator address, process count and id come from flags, else from NEO_COORDINATOR / NEO_NUM_PROCESSES /
NEO_PROCESS_ID, else from the cluster (Cloud TPU VMs and SLURM jobs, which `jax.distributed.initialize()` detects
on its own). A single process needs nothing and gets nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax

from neo.errors import ConfigError

ENV_COORDINATOR = "NEO_COORDINATOR"
ENV_NUM_PROCESSES = "NEO_NUM_PROCESSES"
ENV_PROCESS_ID = "NEO_PROCESS_ID"


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands in the job."""

    process_index: int
    process_count: int
    coordinator: str | None  # None when single-process or auto-detected


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}='{value}' must be an integer") from None


def _cluster_detected() -> bool:
    """A multi-process TPU slice or SLURM job that jax.distributed.initialize() can configure by itself."""
    slurm = int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in os.environ
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    tpu = "," in hosts or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS") is not None
    return slurm or tpu


_STATE: dict[str, ProcessInfo] = {}


def initialize(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> ProcessInfo:
    """Join the job (idempotent). Call before creating arrays or meshes; no-op for a single process."""
    if "info" in _STATE:
        return _STATE["info"]
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    # CPU collectives across processes need gloo; this only affects the CPU client, so it is safe everywhere.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")

    if coordinator is None and num_processes in (None, 1) and process_id in (None, 0):
        if num_processes is None and _cluster_detected():
            jax.distributed.initialize()
            info = ProcessInfo(jax.process_index(), jax.process_count(), None)
        else:
            info = ProcessInfo(0, 1, None)
        _STATE["info"] = info
        return info

    missing = [
        f"--{flag} / {env}"
        for flag, env, value in (
            ("coordinator", ENV_COORDINATOR, coordinator),
            ("num-processes", ENV_NUM_PROCESSES, num_processes),
            ("process-id", ENV_PROCESS_ID, process_id),
        )
        if value is None
    ]
    if missing:
        raise ConfigError(f"multi-process start needs {', '.join(missing)} too (or none of them for one process)")
    assert num_processes is not None and process_id is not None and coordinator is not None
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ConfigError(f"process id {process_id} is not in 0..{num_processes - 1} (num processes {num_processes})")
    if ":" not in coordinator:
        raise ConfigError(f"coordinator '{coordinator}' must be host:port, e.g. 10.0.0.1:8476")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    info = ProcessInfo(jax.process_index(), jax.process_count(), coordinator)
    _STATE["info"] = info
    return info

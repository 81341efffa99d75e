"""Hardware facts per device: peak FLOP/s, memory, and the bandwidths of the step-time estimate.

Accelerators come from a table of published dense bf16 peaks; a CPU has no published figure, so its fp32 matmul
rate is measured once per machine and cached in ~/.cache/neo (the machine rate is shared by the simulated devices).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from typing import Any

from neo import storage
from neo.parallel.config import MeshConfig

# device_kind substring (lower case) -> peak dense bf16 FLOP/s per JAX device. v2/v3 devices are TensorCores
# (half a chip); v4/v5p devices are megacore chips.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("tpu v2", 22.5e12),
    ("tpu v3", 61.5e12),
    ("tpu v4", 275e12),
    ("tpu v5 lite", 197e12),
    ("tpu v5e", 197e12),
    ("tpu v5", 459e12),  # v5p (after the v5 lite entries so those match first)
    ("tpu v6", 918e12),
    ("h200", 989e12),
    ("h100", 989e12),
    ("a100", 312e12),
)


# device_kind substring (lower case) -> (HBM bytes/s, interconnect bytes/s) per JAX device, for the layout search's
# step-time estimate. Interconnect = one-way ICI (TPU) or NVLink (GPU) bandwidth of the whole chip, all links together;
# v2/v3 chips hold two JAX devices (TensorCores), so their per-chip figures are halved. Sources:
#   v2: Jouppi et al., "A Domain-Specific Supercomputer for Training DNNs" (CACM 2020): HBM 600 GB/s, 4 ICI links of
#       496 Gbit/s; v3: cloud.google.com/tpu/docs/v3: HBM 900 GB/s, all-reduce 340 TB/s per 1024-chip pod;
#   v4: cloud.google.com/tpu/docs/v4: HBM 1200 GB/s, all-reduce 1.1 PB/s per 4096-chip pod;
#   v5e: cloud.google.com/tpu/docs/v5e: HBM 819 GB/s, ICI 1600 Gbit/s; v5p: cloud.google.com/tpu/docs/v5p: HBM
#   2765 GB/s, ICI 4800 Gbit/s; v6e: cloud.google.com/tpu/docs/v6e: HBM 1640 GB/s, ICI 3584 Gbit/s;
#   H100/H200/A100 (SXM): NVIDIA datasheets: HBM 3.35 / 4.8 / 2.04 TB/s, NVLink 900 / 900 / 600 GB/s bidirectional.
BANDWIDTH: tuple[tuple[str, float, float], ...] = (
    ("tpu v2", 600e9 / 2, 4 * 496e9 / 8 / 2),
    ("tpu v3", 900e9 / 2, 340e12 / 1024 / 2),
    ("tpu v4", 1200e9, 1.1e15 / 4096),
    ("tpu v5 lite", 819e9, 1600e9 / 8),
    ("tpu v5e", 819e9, 1600e9 / 8),
    ("tpu v5", 2765e9, 4800e9 / 8),  # v5p (after the v5 lite entries so those match first)
    ("tpu v6", 1640e9, 3584e9 / 8),
    ("h200", 4.8e12, 450e9),
    ("h100", 3.35e12, 450e9),
    ("a100", 2.04e12, 300e9),
)
# A CPU "mesh" has no interconnect: arbitrary stand-ins, so an estimate on CPU devices only ranks candidates.
CPU_BANDWIDTH = (20e9, 10e9)


def _table_lookup(device_kind: str) -> float | None:
    kind = device_kind.lower()
    for key, flops in PEAK_FLOPS:
        if key in kind:
            return flops
    return None


def measure_cpu_flops(size: int = 1024, repeats: int = 5) -> float:
    """fp32 matmul FLOP/s of this machine (one XLA CPU computation using every core), best of `repeats`."""
    import jax
    import jax.numpy as jnp

    device = jax.devices("cpu")[0]
    a = jax.device_put(jnp.ones((size, size), jnp.float32), device)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def cpu_machine_flops() -> float:
    """The measured CPU rate, from the cache when this machine was measured before."""
    path = storage.cache_dir() / "cpu_flops.json"
    key = f"{platform.node()}|{platform.processor() or platform.machine()}|{os.cpu_count()}"
    try:
        cached = json.loads(path.read_text())
        if cached.get("machine") == key and cached.get("flops", 0) > 0:
            return float(cached["flops"])
    except (OSError, ValueError):
        pass
    flops = measure_cpu_flops()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"machine": key, "flops": flops}))
        tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    except OSError:
        pass  # an unwritable cache only costs a re-measurement next time
    return flops


def peak_flops_per_device(cfg_or_devices: MeshConfig | Sequence[Any] | None = None) -> float:
    """Peak FLOP/s of one device: the preset's figure, else the table by device kind, else the measured CPU rate.

    For CPU devices the machine rate is divided by the number of local CPU devices, since simulated devices share
    the same cores.
    """
    import jax

    if isinstance(cfg_or_devices, MeshConfig):
        if cfg_or_devices.peak_flops_per_device > 0:
            return cfg_or_devices.peak_flops_per_device
        if cfg_or_devices.device_kind and _table_lookup(cfg_or_devices.device_kind) is not None:
            return _table_lookup(cfg_or_devices.device_kind) or 0.0
        devices: Sequence[Any] = jax.devices()
    else:
        devices = list(cfg_or_devices) if cfg_or_devices is not None else jax.devices()
    kind = str(getattr(devices[0], "device_kind", ""))
    found = _table_lookup(kind)
    if found is not None:
        return found
    if getattr(devices[0], "platform", "cpu") == "cpu":
        return cpu_machine_flops() / max(1, jax.local_device_count("cpu"))
    raise ValueError(f"no peak FLOP/s known for device kind '{kind}'; set mesh.peak_flops_per_device")


def bandwidth_per_device(cfg: MeshConfig, devices: Sequence[Any] = ()) -> tuple[float, float]:
    """(memory, interconnect) bytes/s of one device of the preset's hardware (its `device_kind`, else the devices')."""
    kinds = [cfg.device_kind] if cfg.device_kind else []
    kinds += [str(getattr(d, "device_kind", "")) for d in list(devices)[:1]]
    for kind in kinds:
        for key, memory, interconnect in BANDWIDTH:
            if key in kind.lower():
                return memory, interconnect
    return CPU_BANDWIDTH


def memory_per_device(cfg: MeshConfig, devices: Sequence[Any] | None = None) -> int | None:
    """Bytes a device can hold: the smaller of the preset's figure and what real devices report; None if unknown."""
    figures = [cfg.memory_per_device] if cfg.memory_per_device > 0 else []
    for device in devices or ():
        try:
            stats = device.memory_stats() or {}
        except Exception:  # abstract (topology) devices and some backends have no stats
            stats = {}
        if stats.get("bytes_limit"):
            figures.append(int(stats["bytes_limit"]))
            break
    return min(figures) if figures else None

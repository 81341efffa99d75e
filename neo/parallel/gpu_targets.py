"""GPU models described for XLA's compile-only GPU topology: `neo train --dry-run mesh=gpu-8` and `neo layout search`
compile with the real GPU compiler (the `cuda` extra's jax-cuda12 plugin) for GPUs that are not attached.

XLA's GPU compiler needs the target's facts that it would otherwise ask the driver for: compute capability, SM count,
shared memory and registers (kernel tiling), clock, memory size and bandwidth (its cost model and memory-aware
scheduling), and the cuDNN version (which fused kernels exist). They are given as a `GpuTargetConfigProto` in text
form; the numbers below are NVIDIA's published specifications of each board.
"""

from __future__ import annotations

from importlib import metadata

from neo.errors import LayoutError

# per board: (name as the driver reports it, compute capability, SMs, memory bytes, memory bytes/s, SM clock GHz)
_BOARDS: dict[str, tuple[str, tuple[int, int], int, int, int, float]] = {
    "H100": ("NVIDIA H100 80GB HBM3", (9, 0), 132, 85_520_809_984, 3_350_000_000_000, 1.98),
    "H200": ("NVIDIA H200", (9, 0), 132, 150_754_820_096, 4_800_000_000_000, 1.98),
}
# per compute capability: (shared memory per SM, opt-in shared memory per block, L2 bytes); Hopper has 64k 32-bit
# registers per SM and per block, 2048 threads per SM, 1024 per block
_ARCH = {(9, 0): (233_472, 232_448, 52_428_800)}


GPUS_PER_HOST = 8  # an HGX node: the topology assumed when a GPU mesh names none


def gpu_kinds() -> list[str]:
    return sorted(_BOARDS)


def knows(device_kind: str) -> bool:
    return _match(device_kind) is not None


def topology_of(devices: int, topology: str = "") -> str:
    """XLA's GPU topology, `slices x hosts x GPUs per host`: the mesh's own, else nodes of 8 (or one node of all)."""
    if topology:
        return topology
    if devices % GPUS_PER_HOST:
        return f"1x1x{devices}"
    return f"1x{devices // GPUS_PER_HOST}x{GPUS_PER_HOST}"


def board_name(device_kind: str) -> str:
    """The name the driver reports for a preset's `device_kind` ("H100" -> "NVIDIA H100 80GB HBM3")."""
    return _BOARDS[_kind(device_kind)][0]


def gpu_target_config(device_kind: str) -> str:
    """XLA's `GpuTargetConfigProto`, as text, for a mesh preset's `device_kind` ("H100", "H200")."""
    name, (major, minor), sms, memory, bandwidth, clock = _BOARDS[_kind(device_kind)]
    shared_per_sm, shared_optin, l2 = _ARCH[(major, minor)]
    cudnn = _cudnn_version()
    return f"""
gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_block_optin: {shared_optin}
  shared_memory_per_core: {shared_per_sm}
  threads_per_core_limit: 2048
  core_count: {sms}
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {bandwidth}
  l2_cache_size: {l2}
  clock_rate_ghz: {clock}
  device_memory_size: {memory}
  cuda_compute_capability {{ major: {major} minor: {minor} }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: {cudnn[0]} minor: {cudnn[1]} patch: {cudnn[2]} }}
device_description_str: "{name}"
"""


def _match(device_kind: str) -> str | None:
    """The board a device kind names ("H100", "NVIDIA H100 80GB HBM3" -> "H100"), or None."""
    return next((kind for kind in _BOARDS if kind.lower() in device_kind.lower()), None)


def _kind(device_kind: str) -> str:
    if (kind := _match(device_kind)) is not None:
        return kind
    raise LayoutError(
        f"no GPU description for mesh.device_kind '{device_kind}' to compile for ahead of time; "
        f"use one of {', '.join(gpu_kinds())}"
    )


def _cudnn_version() -> tuple[int, int, int]:
    """The cuDNN that jax[cuda12] installed here: the one the target runs with the same wheels."""
    try:
        parts = [int(p) for p in metadata.version("nvidia-cudnn-cu12").split(".")[:3]]
    except (metadata.PackageNotFoundError, ValueError):
        parts = [9, 8, 0]  # jax[cuda12]'s minimum
    return parts[0], parts[1], parts[2]

"""The devices a layout is compiled for: the real ones when present, the target's own compiler ahead of time for a
TPU preset (libtpu) or GPU preset (the jax-cuda12 plugin) with a topology, else simulated CPU devices standing in
(an estimate), and how to name which one it was."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import jax

from neo.errors import LayoutError
from neo.parallel.config import MeshConfig
from neo.runtime import quiet_libtpu_off_tpu


def request_cpu_devices(n: int) -> None:
    """Ask for `n` simulated CPU devices (to stand in for a pod); must run before JAX starts its backends."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        if len(jax.devices("cpu")) < n:
            raise LayoutError(
                f"JAX already started with {len(jax.devices('cpu'))} CPU devices; {n} are needed to simulate this "
                f"mesh: set XLA_FLAGS=--xla_force_host_platform_device_count={n} before starting"
            )
        return
    jax.config.update("jax_num_cpu_devices", n)


def libtpu_version() -> str | None:
    """The installed `libtpu` wheel's version, or None: the TPU compiler is then unavailable off a TPU."""
    if importlib.util.find_spec("libtpu") is None:
        return None
    from importlib import metadata

    try:
        return metadata.version("libtpu")
    except metadata.PackageNotFoundError:
        return "unknown"


def cuda_plugin_version() -> str | None:
    """The installed jax-cuda12 plugin's version (the `cuda` extra), or None: no GPU compiler off a GPU then."""
    from importlib import metadata

    try:
        return metadata.version("jax-cuda12-plugin")
    except metadata.PackageNotFoundError:
        return None


def uses_aot(cfg: MeshConfig) -> bool:
    """Whether `target_devices(cfg)` will compile with the target's own compiler ahead of time, for absent devices
    (libtpu for a TPU preset with a topology, the jax-cuda12 plugin for GPUs neo can describe): no CPU devices need
    simulating then."""
    from neo.parallel.gpu_targets import knows

    if cfg.platform == "tpu":
        return bool(cfg.topology) and libtpu_version() is not None
    return cfg.platform == "gpu" and cfg.devices > 0 and knows(cfg.device_kind) and cuda_plugin_version() is not None


def target_devices(cfg: MeshConfig) -> tuple[list[Any], bool]:
    """Devices to compile for, and whether the compiler is the target's own (exact) rather than a CPU stand-in.

    Real devices of the right kind and count win; a TPU or GPU preset with a topology compiles ahead of time with
    libtpu or the jax-cuda12 plugin when installed; otherwise simulated CPU devices stand in (an estimate).
    """
    present = jax.devices()
    n = cfg.devices or len(present)
    if len(present) == n and str(present[0].platform).replace("cuda", "gpu") == cfg.platform:
        return present, True
    if uses_aot(cfg):
        if present[0].platform != cfg.platform:
            # programs compiled for absent devices cannot be read back from JAX's persistent cache (only written,
            # with a warning on the next run); the search keeps its own cache of compile reports instead
            jax.config.update("jax_enable_compilation_cache", False)
        devices = _tpu_topology(cfg) if cfg.platform == "tpu" else _gpu_topology(cfg)
        if len(devices) != n:
            raise LayoutError(f"the topology of mesh '{cfg.name}' has {len(devices)} devices, the mesh {n}")
        return devices, True
    cpus = jax.devices("cpu")
    if len(cpus) < n:
        raise LayoutError(
            f"mesh '{cfg.name}' needs {n} devices to compile for but {len(cpus)} CPU devices are simulated; start with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n} (or install the `aot` extra for TPU presets, "
            "`cuda` for GPU presets)"
        )
    return cpus[:n], False


def _tpu_topology(cfg: MeshConfig) -> list[Any]:
    """libtpu's abstract devices of the preset's TPU topology."""
    from jax.experimental import topologies

    if jax.devices()[0].platform != "tpu":
        quiet_libtpu_off_tpu()
    kwargs: dict[str, Any] = {}
    if cfg.chips_per_host_bounds:
        kwargs["chips_per_host_bounds"] = tuple(cfg.chips_per_host_bounds)
    try:
        topo = topologies.get_topology_desc(
            platform="tpu", topology_name=cfg.topology, chip_config_name=cfg.tpu_chip_config, num_slices=1, **kwargs
        )
    except Exception as exc:  # libtpu reports a bad topology or a load failure as a bare runtime error
        raise LayoutError(
            f"libtpu cannot describe topology '{cfg.topology}' of mesh '{cfg.name}': {_first(exc)}"
        ) from None
    return list(topo.devices)


def _gpu_topology(cfg: MeshConfig) -> list[Any]:
    """XLA's compile-only GPUs of the preset's `device_kind`, `slices x hosts x GPUs per host` of them."""
    from jax.experimental import topologies

    from neo.parallel.gpu_targets import gpu_target_config, topology_of

    target, topology = gpu_target_config(cfg.device_kind), topology_of(cfg.devices, cfg.topology)
    try:
        topo = topologies.get_topology_desc(platform="cuda", topology=topology, target_config=target)
    except Exception as exc:  # the plugin reports a bad topology as a bare runtime error
        raise LayoutError(
            f"the CUDA plugin cannot describe topology '{topology}' of mesh '{cfg.name}': {_first(exc)}"
        ) from None
    return list(topo.devices)


def _first(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def compiler_name(devices: Sequence[Any], exact: bool) -> str:
    """Which compiler produced the numbers, for the user: they are only as good as this."""
    kind = str(getattr(devices[0], "device_kind", devices[0].platform))
    if not exact:
        return (
            f"XLA CPU on {len(devices)} simulated devices (an estimate, not the target's compiler: the `aot` extra "
            "brings the TPU compiler, the `cuda` extra the GPU one)"
        )
    if devices[0].platform == "tpu" and jax.default_backend() != "tpu":
        return f"TPU compiler (libtpu {libtpu_version()}, ahead of time) for {len(devices)} × {kind}: exact"
    if devices[0].platform == "gpu" and jax.default_backend() != "gpu":
        plugin = cuda_plugin_version()
        return f"XLA GPU compiler (jax-cuda12 {plugin}, ahead of time) for {len(devices)} × {kind}: exact"
    return f"XLA for the {len(devices)} × {kind} present: exact"

"""Build the `jax.sharding.Mesh` a run uses, failing in one line when the devices do not match the config."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import AxisType, Mesh

from neo.errors import LayoutError, NeoError
from neo.parallel.config import MeshConfig
from neo.parallel.layout import Rules, layout_rules
from neo.parallel.presets import presets_for
from neo.parallel.shape import format_mesh_shape, resolve_mesh_shape


def describe_devices(devices: Sequence[Any]) -> str:
    """`8 × TPU v3` / `4 × cpu, 4 × NVIDIA H100` — what is present, for error messages."""
    kinds = Counter(getattr(d, "device_kind", str(getattr(d, "platform", "?"))) for d in devices)
    return ", ".join(f"{n} × {kind}" for kind, n in kinds.items()) or "no devices"


def _platform_of(devices: Sequence[Any]) -> str:
    platform = str(getattr(devices[0], "platform", "cpu")).lower()
    return {"cuda": "gpu", "rocm": "gpu"}.get(platform, platform)


def mesh_axes(
    cfg: MeshConfig, n_devices: int, present: str | None = None, platform: str | None = None
) -> list[tuple[str, int]]:
    """The (name, size) axes `cfg` gives on `n_devices` devices (of `platform`), or a LayoutError naming what fits."""
    present = present or f"{n_devices} devices"
    if cfg.devices and cfg.devices != n_devices:
        plan = "; `neo train --dry-run` plans for it without them" if cfg.devices > n_devices else ""
        if cfg.platform == "cpu" and platform == "cpu":  # CPU devices are simulated by asking XLA for more
            plan = f"; run with XLA_FLAGS=--xla_force_host_platform_device_count={cfg.devices} to get {cfg.devices}"
        fix = _fix(n_devices, platform)
        raise LayoutError(f"mesh '{cfg.name}' needs {cfg.devices} devices but {present} are present{plan}; {fix}")
    try:
        return resolve_mesh_shape(cfg.shape, n_devices)
    except NeoError as exc:
        raise LayoutError(f"{exc} ({present}, mesh '{cfg.name}'); {_fix(n_devices, platform)}") from None


def _fix(n_devices: int, platform: str | None) -> str:
    """Presets of the platform present (never a GPU preset on a CPU host) that run on `n_devices` devices."""
    fits = presets_for(n_devices, platform)
    shape = f"or set mesh.shape to sizes whose product is {n_devices}"
    return f"presets that fit here: mesh={', mesh='.join(fits)} {shape}" if fits else shape


def make_mesh(cfg: MeshConfig, devices: Sequence[Any] | None = None) -> Mesh:
    """The mesh described by `cfg` over `devices` (default: every device, across all processes), Auto axis types.

    `devices` may also be abstract TPU devices from `jax.experimental.topologies` (ahead-of-time compilation).
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise LayoutError("no JAX devices are available; check JAX_PLATFORMS and the accelerator drivers")
    axes = mesh_axes(cfg, len(devices), describe_devices(devices), _platform_of(devices))
    names = tuple(name for name, _ in axes)
    sizes = tuple(size for _, size in axes)
    try:
        return jax.make_mesh(sizes, names, axis_types=(AxisType.Auto,) * len(names), devices=devices)
    except (ValueError, NotImplementedError, AssertionError) as exc:
        raise LayoutError(
            f"mesh '{cfg.name}' shape {format_mesh_shape(axes)} cannot be laid on {describe_devices(devices)}: {exc}"
        ) from None


def platform_mismatch(cfg: MeshConfig, devices: Sequence[Any]) -> str | None:
    """A warning line when a preset describes other hardware than the devices present (e.g. a TPU preset on GPUs)."""
    platform = _platform_of(devices)
    if cfg.platform != platform:
        return (
            f"mesh '{cfg.name}' describes {cfg.platform} devices but the mesh runs on {describe_devices(devices)}; "
            "memory and FLOP/s figures come from the preset, not the hardware"
        )
    return None


def mesh_and_rules(cfg: MeshConfig, devices: Sequence[Any] | None = None) -> tuple[Mesh, Rules]:
    """The mesh and the logical-axis rules of `cfg.layout` on it: what the trainer and the model need."""
    mesh = make_mesh(cfg, devices)
    return mesh, layout_rules(cfg.layout, list(mesh.axis_names))


@contextlib.contextmanager
def placement(mesh: Mesh | None, rules: Rules | None) -> Iterator[None]:
    """Run under `mesh` with the logical-axis `rules`: what tracing and running a sharded program needs (the model's
    logical constraints resolve against both). Nothing for `mesh` None (one device)."""
    if mesh is None:
        yield
        return
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules or ()):
        yield

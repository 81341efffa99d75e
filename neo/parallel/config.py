"""The mesh config: which devices, in what shape, and how logical axes map onto them.

A preset under `neo/conf/mesh/` (`mesh=v3-256`) fills the hardware facts (device count, memory, peak FLOP/s, TPU
topology) and a default shape and layout; `mesh.shape=... mesh.layout=...` override them on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from neo.errors import ConfigError

PLATFORMS = ("cpu", "gpu", "tpu")


@dataclass
class MeshConfig:
    name: str = "cpu"  # preset name, for display and error messages
    # GPT-Neo mesh_shape, e.g. "x:16,y:8" (axis names and sizes; one size may be -1 = the remaining devices);
    # empty = every device on one axis named "data"
    shape: str = ""
    # GPT-Neo layout, e.g. "batch:x,heads:y" (logical or mesh-tf name -> mesh axis; "batch:x+y" splits one
    # dimension over several axes); empty = pure data parallelism, batch over every mesh axis
    layout: str = ""
    platform: str = "cpu"  # the device kind the preset describes: cpu, gpu or tpu
    devices: int = 0  # number of devices the mesh spans; 0 = all devices present (jax.devices())
    memory_per_device: int = 0  # bytes of accelerator memory per device; 0 = ask the devices present
    peak_flops_per_device: float = 0.0  # peak bf16 FLOP/s per device, for MFU; 0 = look up or measure
    # the hardware, as JAX's device_kind names it ("TPU v3", "H100"): selects memory and interconnect bandwidths
    # (neo.parallel.flops.BANDWIDTH) for the layout search's step-time estimate; empty = the devices present
    device_kind: str = ""
    # topology to compile for ahead of time, without the devices (jax.experimental.topologies): a TPU topology such
    # as "v3:8x16" (libtpu), or GPUs as "slices x hosts x GPUs per host" such as "1x4x8" (the jax-cuda12 plugin, for
    # the GPU `device_kind` names: neo.parallel.gpu_targets); empty for GPUs = nodes of 8
    topology: str = ""
    tpu_chip_config: str = "default"  # libtpu chip config of that topology: "default", or "megacore" for v4
    # chips per host of that topology (get_topology_desc's chips_per_host_bounds); empty = libtpu's default
    chips_per_host_bounds: list[int] = field(default_factory=list)

    def validate(self) -> None:
        from neo.parallel.layout import parse_layout
        from neo.parallel.shape import DATA_AXIS, parse_mesh_shape

        if self.platform not in PLATFORMS:
            raise ConfigError(f"mesh.platform must be one of {', '.join(PLATFORMS)}, got '{self.platform}'")
        for key in ("devices", "memory_per_device"):
            if getattr(self, key) < 0:
                raise ConfigError(f"mesh.{key} must be >= 0 (0 = ask the devices present), got {getattr(self, key)}")
        if self.peak_flops_per_device < 0:
            raise ConfigError(f"mesh.peak_flops_per_device must be >= 0, got {self.peak_flops_per_device}")
        if self.tpu_chip_config not in ("default", "megacore"):
            raise ConfigError(f"mesh.tpu_chip_config must be default or megacore, got '{self.tpu_chip_config}'")
        if self.topology and self.platform == "cpu":
            raise ConfigError(f"mesh.topology ('{self.topology}') is only meaningful with mesh.platform=tpu or gpu")
        if self.topology and self.platform == "gpu":
            self._validate_gpu_topology()
        if self.chips_per_host_bounds and (
            len(self.chips_per_host_bounds) != 3 or any(b <= 0 for b in self.chips_per_host_bounds)
        ):
            raise ConfigError(
                "mesh.chips_per_host_bounds must be three positive ints such as [2,2,1], "
                f"got {self.chips_per_host_bounds}"
            )
        axes = parse_mesh_shape(self.shape)
        if self.devices and axes:
            sizes = [s for _, s in axes]
            if -1 not in sizes and _prod(sizes) != self.devices:
                raise ConfigError(
                    f"mesh.shape '{self.shape}' has {_prod(sizes)} devices but mesh.devices is {self.devices} "
                    f"(preset '{self.name}'); choose sizes whose product is {self.devices}"
                )
        parse_layout(self.layout, mesh_axes=[a for a, _ in axes] or [DATA_AXIS])

    def _validate_gpu_topology(self) -> None:
        from neo.parallel.gpu_targets import gpu_kinds, knows

        parts = self.topology.split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ConfigError(
                f"mesh.topology '{self.topology}' of a GPU mesh must be slices x hosts x GPUs per host, e.g. 1x1x8"
            )
        if self.devices and _prod([int(p) for p in parts]) != self.devices:
            raise ConfigError(
                f"mesh.topology '{self.topology}' has {_prod([int(p) for p in parts])} GPUs but mesh.devices is "
                f"{self.devices}; make their counts agree"
            )
        if not knows(self.device_kind):
            raise ConfigError(
                f"mesh.device_kind '{self.device_kind}' names no GPU neo can compile for ahead of time; "
                f"use one of {', '.join(gpu_kinds())} (or drop mesh.topology)"
            )


def _prod(values: list[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out

"""`neo train --dry-run`: compile the real train step against abstract inputs and report per-device memory.

Nothing is allocated: the state and batch are `jax.ShapeDtypeStruct`s with their shardings, so a model far larger
than this machine compiles as long as the target devices exist (real, or simulated host devices).
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from neo.config import NeoConfig
from neo.train.session import build_session

GiB = 1024**3


@dataclass
class DryRunReport:
    n_params: int
    devices: int
    mesh: dict[str, int]
    argument_bytes: int  # params + optimizer state + batch, per device
    temp_bytes: int  # activations and other scratch, per device
    output_bytes: int
    peak_bytes: int  # argument + temp + output - aliased (donated) bytes
    device_memory: int | None  # bytes per device of the target, when the mesh preset knows it

    @property
    def fits(self) -> bool | None:
        return None if not self.device_memory else self.peak_bytes <= self.device_memory

    def summary(self) -> str:
        cap = f" of {self.device_memory / GiB:.2f} GiB" if self.device_memory else ""
        verdict = {True: "fits", False: "does NOT fit", None: "device memory unknown"}[self.fits]
        return (
            f"{self.n_params:,} parameters on {self.devices} device(s), mesh {self.mesh}\n"
            f"per device: arguments {self.argument_bytes / GiB:.3f} GiB, temporaries {self.temp_bytes / GiB:.3f} GiB,"
            f" peak {self.peak_bytes / GiB:.3f} GiB{cap}: {verdict}"
        )


def dry_run(cfg: NeoConfig) -> DryRunReport:
    session = build_session(cfg)
    batch = jax.ShapeDtypeStruct(
        (cfg.train.batch_size, cfg.model.n_ctx + 1), jnp.int32, sharding=session.batch_sharding
    )
    with jax.set_mesh(session.mesh), nn.logical_axis_rules(session.rules):
        compiled = session.train_step.jitted.lower(session.layout.abstract, batch).compile()
    mem = compiled.memory_analysis()
    arg, temp, out = mem.argument_size_in_bytes, mem.temp_size_in_bytes, mem.output_size_in_bytes
    peak = arg + temp + out - mem.alias_size_in_bytes
    return DryRunReport(
        n_params=session.n_params,
        devices=int(session.mesh.devices.size),
        mesh=dict(session.mesh.shape),
        argument_bytes=arg,
        temp_bytes=temp,
        output_bytes=out,
        peak_bytes=peak,
        device_memory=getattr(cfg.mesh, "memory_per_device", None) or None,
    )

"""Run a per-device attention kernel over the mesh in context: batch and heads split as the layout says.

Custom kernels (Pallas/Mosaic, cuDNN custom calls) are not partitioned by XLA, so they run inside `shard_map`
with q/k/v sharded over the mesh axes the logical-axis rules give `batch` and `heads`, and the sequence and head
dimension whole on every device (where the layout splits them, XLA gathers them at the boundary).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
from jax.sharding import PartitionSpec

QKV_AXES = ("batch", "length", "heads", "kv")


def per_shard(kernel: Callable[..., jax.Array], q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """kernel(q, k, v) -> out, all [batch, length, heads, kv], called on each device's batch and head slice."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return kernel(q, k, v)
    batch, heads = nn.logical_to_mesh_axes(("batch", "heads"))
    spec = PartitionSpec(batch, None, heads, None)
    return jax.shard_map(kernel, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)(q, k, v)

"""One of the processes started by test_distributed: join, build a global mesh, reduce, print JSON."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from neo.parallel.config import MeshConfig
from neo.parallel.distributed import initialize
from neo.parallel.mesh import make_mesh

info = initialize()
mesh = make_mesh(MeshConfig(shape="x:-1"))
n = mesh.devices.size
sharding = NamedSharding(mesh, P("x"))
full = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
arr = jax.make_array_from_callback(full.shape, sharding, lambda idx: full[idx])
total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(arr)


@jax.jit
def psum_ids(x):
    return jax.shard_map(lambda b: jax.lax.psum(b, "x"), mesh=mesh, in_specs=P("x"), out_specs=P())(x)


summed = psum_ids(arr)  # each device holds one row; psum over x gives the column sums
print(
    json.dumps(
        {
            "process": info.process_index,
            "count": info.process_count,
            "devices": jax.device_count(),
            "local": jax.local_device_count(),
            "mesh": dict(mesh.shape),
            "total": float(total.addressable_data(0)),
            "psum": np.asarray(summed.addressable_data(0)).reshape(-1).tolist(),
        }
    )
)
sys.stdout.flush()

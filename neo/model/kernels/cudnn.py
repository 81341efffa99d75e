"""NVIDIA GPU flash attention: cuDNN's fused attention through `jax.nn.dot_product_attention(implementation="cudnn")`.

`is_causal=True` for global layers and `local_window_size=(w - 1, 0)` for local ones (a query at i sees keys
i-w+1 .. i), `scale=1.0` (GPT-Neo does not scale the scores). cuDNN takes bf16 (or fp16) operands only: float32
activations are cast to bf16 for the kernel, whose softmax statistics are float32. Runs per device in `shard_map`
(batch and heads split as the layout says). Other masks (padding, memory key/values, dropout) use xla's form.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from neo.model.kernels import xla
from neo.model.kernels.sharded import per_shard
from neo.model.kernels.xla import add_bias, dense  # noqa: F401  (XLA's products: cuBLAS)

CPU_MATMULS = False


def flash(q: jax.Array, k: jax.Array, v: jax.Array, window: int | None) -> jax.Array:
    """Causal (or local) attention of one device's q/k/v [batch, length, heads, kv] through cuDNN, in bf16."""
    q, k, v = (t.astype(jnp.bfloat16) for t in (q, k, v))
    local = None if window is None else (window - 1, 0)
    return jax.nn.dot_product_attention(
        q, k, v, scale=1.0, is_causal=True, local_window_size=local, implementation="cudnn"
    )


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    window: int | None,
    in_order: bool,
    dropout: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """In-order causal training rows through cuDNN, sharded over the mesh; other masks through xla's form."""
    if not in_order or dropout is not None:
        return xla.attention(q, k, v, mask, window, in_order, dropout)
    return per_shard(lambda q, k, v: flash(q, k, v, window), q, k, v).astype(jnp.float32)

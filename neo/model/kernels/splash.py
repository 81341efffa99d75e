"""TPU flash attention: Pallas splash kernels (`jax.experimental.pallas.ops.tpu.splash_attention`).

Sequences whose length is not a multiple of 128 (tiny test models) take xla's form.

GPT-Neo's masks as splash masks: `global` is `CausalMask`; `local` (a query at i sees keys i-w+1 .. i) is
`LocalMask(window_size=(w - 1, 0))`. Splash does not scale the scores, exactly as GPT-Neo (whose scaling lives in
the q initialiser). The scores never exist as a [q, k] tensor: blocks of 128-512 rows stream through VMEM with an
online softmax whose statistics are float32, forward and backward, and blocks the mask hides entirely are skipped
(a local layer costs O(length * window)). The kernel runs per device in `shard_map` (batch and heads split as the
layout says). Off TPU (tests on CPU) it runs in Pallas interpret mode: the same kernel code, slowly.

TPU v3's compiler rejects bf16 operands for these kernels, so on v3 they get float32 operands (and the MXU runs
its float32 passes); v4 and later take the model's dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash

from neo.model.kernels import xla
from neo.model.kernels.sharded import per_shard
from neo.model.kernels.xla import add_bias, dense  # noqa: F401  (XLA's products are the TPU's own)

CPU_MATMULS = False
BLOCK_CHOICES = (512, 256, 128)  # rows per kernel block: the largest that divides the sequence


def block_size(length: int) -> int | None:
    """Rows per block; None when no choice divides `length` (the kernel's tiles are multiples of 128 rows)."""
    return next((b for b in BLOCK_CHOICES if length % b == 0), None)


def make_kernel(length: int, heads: int, window: int | None, interpret: bool) -> Callable[..., jax.Array]:
    """The splash kernel for [heads, length, kv] operands of one sequence: causal, or local with `window`.

    Made anew for each trace: its mask tables become constants of the program being traced."""
    shape = (length, length)
    mask = splash.CausalMask(shape) if window is None else splash.LocalMask(shape, (window - 1, 0), offset=0)
    b = block_size(length)
    sizes = splash.BlockSizes(
        block_q=b,
        block_kv=b,
        block_kv_compute=b,
        block_q_dkv=b,
        block_kv_dkv=b,
        block_kv_dkv_compute=b,
        block_q_dq=b,
        block_kv_dq=b,
    )
    multi = splash.MultiHeadMask([mask] * heads)  # splash caches the mask's block tables (numpy) itself
    return splash.make_splash_mha(multi, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


FLOAT32_OPERANDS_ON = ("v3",)  # TPU generations whose compiler rejects bf16 splash kernels (measured: v3)


def _operand_dtype(dtype: jnp.dtype, device_kind: str) -> jnp.dtype:
    kind = device_kind.lower()
    return jnp.dtype(jnp.float32) if any(g in kind for g in FLOAT32_OPERANDS_ON) else dtype


def flash(q: jax.Array, k: jax.Array, v: jax.Array, window: int | None, interpret: bool = False) -> jax.Array:
    """Causal (or local) attention of one device's q/k/v [batch, length, heads, kv] through the splash kernel."""
    _, length, heads, _ = q.shape
    kernel = make_kernel(length, heads, window, interpret)
    heads_first = (0, 2, 1, 3)
    out = jax.vmap(kernel)(*(t.transpose(heads_first) for t in (q, k, v)))
    return out.transpose(heads_first)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    window: int | None,
    in_order: bool,
    dropout: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """In-order causal training rows through splash, sharded over the mesh; other masks through xla's form."""
    if not in_order or dropout is not None or block_size(q.shape[1]) is None:
        return xla.attention(q, k, v, mask, window, in_order, dropout)
    mesh = jax.sharding.get_abstract_mesh()
    device = mesh.abstract_device if not mesh.empty else jax.devices()[0]
    interpret = str(device.platform).lower() != "tpu"
    dtype = _operand_dtype(q.dtype, str(getattr(device, "device_kind", "")))
    q, k, v = (t.astype(dtype) for t in (q, k, v))
    out = per_shard(lambda q, k, v: flash(q, k, v, window, interpret), q, k, v)
    return out.astype(jnp.float32)

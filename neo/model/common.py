"""Shared pieces of the layers: dtypes, initialisers, logically partitioned parameters, activations.

Every parameter is created through `param` so that it carries logical axis names (never mesh axes) from init on;
every activation boundary goes through `constrain`. Only `neo/parallel/` maps the names to devices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from neo.model import cpu_matvec
from neo.model.config import ModelConfig, resolve_precision
from neo.model.kernels import kernels_for, target_platform
from neo.model.quantize import Bf16Weight, Int8Weight, LowBitWeight, is_low_bit

Initializer = Callable[..., jax.Array]
FEW_ROWS = 64  # products with at most this many rows (decoding) take the `rows_times_weight` form


def dtype_of(name: str) -> jnp.dtype:
    """The dtype a config value names. `auto` (a `model.precision` that never met a mesh preset: a ModelConfig made
    in code, a Hugging Face directory sampled as is) is resolved against the devices the model compiles for."""
    name = resolve_precision(name, target_platform())
    return jnp.dtype({"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name])


def normal(std: float) -> Initializer:
    return nn.initializers.normal(stddev=std)


def dense_std(cfg: ModelConfig, fan_in: int, std: float = 0.02, *, residual_out: bool = False) -> float:
    """GPT-Neo dense init std: / sqrt(n_layer) on residual outputs (scale_by_depth), / sqrt(fan_in) (scale_by_in)."""
    if residual_out and cfg.scale_by_depth:
        std /= math.sqrt(cfg.n_layer)
    if cfg.scale_by_in:
        std /= math.sqrt(fan_in)
    return std


def param(
    module: nn.Module, name: str, init: Initializer, shape: Sequence[int], axes: Sequence[str | None], cfg: ModelConfig
) -> jax.Array:
    """A parameter boxed with its logical axis names, returned cast to the activation dtype (a low-precision decoding
    weight, `neo.model.quantize`, is returned as is: `dense`, `embed` and the logits widen it where it is used)."""
    value = module.param(name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape), dtype_of(cfg.param_dtype))
    if is_low_bit(value):
        return value
    return jnp.asarray(value, dtype_of(cfg.precision))


def dense_param(
    module: nn.Module,
    name: str,
    init: Initializer,
    shape: Sequence[int],
    axes: Sequence[str | None],
    cfg: ModelConfig,
    n_in: int = 1,
) -> jax.Array:
    """A dense weight, logically [in..., out...] (its first `n_in` dims meet the input); use it with `dense`.

    With `cfg.weights_out_first` (decoding) it is stored [out..., in...], with its logical names permuted alike.
    """
    if cfg.weights_out_first:
        shape, axes = (*shape[n_in:], *shape[:n_in]), (*axes[n_in:], *axes[:n_in])
    return param(module, name, init, shape, axes, cfg)


def dense(
    x: jax.Array, w: jax.Array | LowBitWeight, spec: str, cfg: ModelConfig, bias: jax.Array | None = None
) -> jax.Array:
    """`einsum(spec, x, w) + bias` for a `dense_param` weight, where x's trailing dims contract with w's leading ones.

    The product and the bias are the configured kernels' (`neo.model.kernels`: on CPUs the gradients take XLA CPU's
    fast operand orders, and its fast bfloat16 path in bf16). A weight stored [out, in] (`cfg.weights_out_first`,
    decoding) meets a few rows through `rows_times_weight`; many rows (a prefill) as x @ w.T, which XLA CPU runs as
    fast as x @ w.
    """
    if not cfg.weights_out_first:
        kernels = kernels_for(cfg.attention_impl, cfg.precision)
        y = kernels.dense(x, w, spec)
        return y if bias is None else kernels.add_bias(y, bias)
    x2, w2, shape = _as_matrices(x, w, spec)
    y = (rows_times_weight(x2, w2) if x2.shape[0] <= FEW_ROWS else many_rows_times_weight(x2, w2)).reshape(shape)
    return y if bias is None else y + bias


def dense_three(
    x: jax.Array, ws: tuple[Any, Any, Any], spec: str, cfg: ModelConfig
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`dense(x, w, spec, cfg)` for three weights of one shape and kind (attention's q, k and v): one call of neo's CPU
    kernel where it takes all three (`cpu_matvec.rows_times_three`), else three products."""
    if cfg.weights_out_first:
        parts = [_as_matrices(x, w, spec) for w in ws]
        (x2, _, shape), w2 = parts[0], tuple(w for _, w, _ in parts)
        kinds = {(type(w), getattr(w, "stored", w).shape) for w in w2}
        if len(kinds) == 1 and all(cpu_matvec.handles(x2, w) for w in w2):
            return tuple(y.reshape(shape) for y in cpu_matvec.rows_times_three(x2, w2))  # type: ignore[return-value]
    return tuple(dense(x, w, spec, cfg) for w in ws)  # type: ignore[return-value]


def _as_matrices(x: jax.Array, w: jax.Array | LowBitWeight, spec: str) -> tuple[jax.Array, Any, tuple[int, ...]]:
    """(x as [rows, in], a weight stored [out..., in...] as [out, in], the product's shape) for `dense`'s `spec`."""
    xs, ws = spec.split("->")[0].split(",")
    n_in = len(set(xs) & set(ws))
    lead = x.shape[: x.ndim - n_in]
    stored = w.stored if is_low_bit(w) else w
    outs = stored.shape[: stored.ndim - n_in]
    w2 = w.matrix(n_in) if is_low_bit(w) else w.reshape(math.prod(outs), -1)
    return x.reshape(math.prod(lead), -1), w2, (*lead, *outs)


def embed(table: jax.Array | LowBitWeight, ids: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Rows `ids` of an embedding table [vocab, embd], in the activation dtype."""
    if is_low_bit(table):
        return table.rows(ids, dtype_of(cfg.precision))
    return table[ids]


def rows_times_weight(x: jax.Array, w: jax.Array | LowBitWeight, **dot_kwargs: Any) -> jax.Array:
    """x [rows, in] @ w.T for a weight stored [out, in] and a few rows (decoding).

    A low-precision weight meets float32 rows on CPU in neo's own kernel (`neo.model.cpu_matvec`), which streams it
    at its own width. Otherwise the product is formed as w @ x.T and transposed after, behind an optimisation barrier
    (XLA folds the transpose back into the dot otherwise): XLA CPU streams the weight 1.15x faster at batch 1 and
    1.3-1.6x faster at batch 8 this way round.
    """
    if cpu_matvec.handles(x, w):
        return cpu_matvec.rows_times(x, w)
    if isinstance(w, Int8Weight):
        return rows_times_weight(x, w.q, **dot_kwargs) * w.scale  # per output channel
    if isinstance(w, Bf16Weight):
        w = w.w
    return jax.lax.optimization_barrier(jnp.einsum("oi,ni->on", w, x, **dot_kwargs)).T


def many_rows_times_weight(x: jax.Array, w: jax.Array | LowBitWeight, **dot_kwargs: Any) -> jax.Array:
    """x [rows, in] @ w.T for a weight stored [out, in] and many rows (a prefill), by XLA.

    A low-precision weight still meets the rows on CPU in neo's kernel where it takes them (up to
    `cpu_matvec.MAX_ROWS`): XLA would widen every such weight to float32 in fresh buffers at each prefill (~370 MB for
    neo_125M, faulted in anew in every process, and with huge pages compacted for: 0.2-1 s), where the kernel reads
    the weight at its own width.
    """
    if cpu_matvec.handles(x, w):
        return cpu_matvec.rows_times(x, w)
    if isinstance(w, Int8Weight):
        return many_rows_times_weight(x, w.q, **dot_kwargs) * w.scale
    if isinstance(w, Bf16Weight):
        w = w.w
    return jnp.einsum("ni,oi->no", x, w, **dot_kwargs)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    return nn.with_logical_constraint(x, tuple(axes))


ACTIVATION_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "selu": jax.nn.selu,
    "elu": jax.nn.elu,
    "celu": jax.nn.celu,
    "silu": jax.nn.silu,
    "swish": jax.nn.swish,
    "mish": jax.nn.mish,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "leaky_relu": jax.nn.leaky_relu,
    "log_sigmoid": jax.nn.log_sigmoid,
    "soft_sign": jax.nn.soft_sign,
    "hard_tanh": jax.nn.hard_tanh,
    "hard_sigmoid": jax.nn.hard_sigmoid,
    "hard_silu": jax.nn.hard_silu,
    "lisht": lambda x: x * jnp.tanh(x),
    "abs": jnp.abs,
    "sin": jnp.sin,
    "cos": jnp.cos,
}

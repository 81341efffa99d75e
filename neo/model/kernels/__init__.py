"""Kernels as a named choice: `model.attention_impl` = auto | xla | splash | cudnn | cpu.

The GPT-Neo block (`neo.model.attention`, `neo.model.transformer`) says *what* it computes; the implementation
module chosen here says *how* on the devices at hand. Every implementation module offers the same four things:

    dense(x, w, spec)                        einsum(spec, x, w) for a weight stored [in..., out...]
    add_bias(y, b)                           y + b, b broadcast over y's last axis
    attention(q, k, v, mask, window, in_order, dropout)
                                             softmax(q kᵀ + mask) v without scaling, q/k/v [batch, length, heads, kv];
                                             float32 statistics; `in_order` = training rows 0..length-1, all valid
    CPU_MATMULS                              whether the fused head loss forms its gradient in XLA CPU's fast order

- `xla`: `jax.nn.dot_product_attention` on float32 operands with an explicit mask (any platform; the reference).
- `cpu`: the CPU training kernels: custom-VJP matmuls, and causal attention in neo's fused float32 kernel (bf16:
  whole-square products; elsewhere XLA's products in query blocks) with a written-out backward.
- `splash`: TPU flash attention (Pallas splash kernels, causal and sliding-window masks), in shard_map.
- `cudnn`: NVIDIA cuDNN flash attention through `jax.nn.dot_product_attention(implementation="cudnn")`, bf16.
- `auto`: cpu on CPUs, splash on TPUs (float32 operands on v3, whose compiler rejects bf16 splash), cudnn on
  NVIDIA GPUs when the model computes in bfloat16 (cuDNN takes no float32), else xla.

The accelerator kernels take in-order causal training rows; anything else (padding, explicit positions, memory
key/values, bidirectional MLM, attention dropout) runs the xla form, which is exact for every mask.
"""

from __future__ import annotations

from types import ModuleType

import jax

from neo.errors import ConfigError
from neo.model.config import ATTENTION_IMPLS as IMPLS
from neo.model.config import resolve_precision

_NEEDS = {"splash": "tpu", "cudnn": "gpu", "cpu": "cpu"}  # the platform an explicit choice needs; xla runs anywhere


def platform_of(device: object) -> str:
    """cpu | tpu | gpu (CUDA and ROCm devices both say gpu)."""
    platform = str(getattr(device, "platform", "cpu")).lower()
    return "gpu" if platform in ("gpu", "cuda", "rocm") else platform


def resolve(impl: str, platform: str, precision: str = "float32") -> str:
    """The implementation `impl` names on devices of `platform`; a choice those devices cannot run raises a
    one-line ConfigError (exit 2)."""
    if impl not in IMPLS:
        raise ConfigError(f"model.attention_impl '{impl}' is not one of: {', '.join(IMPLS)}")
    if impl == "auto":
        if platform == "tpu":
            return "splash"
        if platform == "gpu":
            return "cudnn" if resolve_precision(precision, platform) == "bfloat16" else "xla"
        return "cpu" if platform == "cpu" else "xla"
    need = _NEEDS.get(impl)
    if need is not None and need != platform:
        raise ConfigError(
            f"model.attention_impl={impl} needs {need.upper()} devices but these are {platform.upper()}; "
            "use model.attention_impl=auto (or xla)"
        )
    return impl


def target_platform() -> str:
    """The platform a model traced now compiles for: the mesh in context (real or an AOT topology), else the
    default backend."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty:
        return platform_of(mesh.abstract_device)
    return platform_of(jax.devices()[0])


def kernels_for(impl: str, precision: str = "float32") -> ModuleType:
    """The implementation module for a (possibly `auto`) choice, resolved against the target platform."""
    name = resolve(impl, target_platform(), precision) if impl == "auto" else impl
    if name == "cpu":
        from neo.model.kernels import cpu as module
    elif name == "splash":
        from neo.model.kernels import splash as module
    elif name == "cudnn":
        from neo.model.kernels import cudnn as module
    else:
        from neo.model.kernels import xla as module
    return module

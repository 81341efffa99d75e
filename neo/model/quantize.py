"""Fewer bytes per weight for decoding: `neo sample --weights float32 | bfloat16 | int8`.

Batch-1 decoding streams every weight once per token, so its speed is bounded by the bytes it reads. `bfloat16`
stores every dense weight and the embedding at two bytes; `int8` is weight-only quantization at one byte with one
float32 scale per output channel (symmetric, round to nearest: w ≈ q · scale, |q| ≤ 127). Activations, norms,
biases, position embeddings and the logits stay float32; the weights are widened where they are used: on CPU inside
neo's own kernel (`neo.model.cpu_matvec`), elsewhere by XLA. The KV cache, which every step also reads whole, is then
held in bfloat16 (`neo.model.decode.kv_dtype`).

Applied to parameters already in the decoding layout (`neo.model.decode.for_decoding`: dense weights stored
[out..., in...]), where a weight's input axes are its trailing ones.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from neo.errors import ConfigError

WEIGHT_DTYPES = ("float32", "bfloat16", "int8")
_IN_AXES = {"o": 2}  # input axes of each quantized weight in the decoding layout ([d, heads, kv] for the output
# projection); every other one below meets its input on its last axis
_QUANTIZED = {"q", "k", "v", "o", "c_fc", "c_gate", "c_proj", "wte", "lm_head"}


class Bf16Weight(NamedTuple):
    """w [out..., in...] bfloat16: a weight `--weights bfloat16` holds at two bytes. Kept apart from a model's own
    bfloat16 parameters, which compute in its precision as usual; this one meets float32 rows widened."""

    w: jax.Array

    @property
    def stored(self) -> jax.Array:
        return self.w

    def widened(self, dtype: Any = jnp.float32) -> jax.Array:
        return self.w.astype(dtype)

    def rows(self, ids: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
        """Embedding lookup: the rows `ids` of a [vocab, embd] table, widened."""
        return self.w[ids].astype(dtype)

    def matrix(self, n_in: int) -> Bf16Weight:
        """The same weight as [out, in], its last `n_in` axes being its inputs."""
        return Bf16Weight(_matrix(self.w, n_in))


class Int8Weight(NamedTuple):
    """q [out..., in...] int8 and scale [out...] float32: the weight is q · scale."""

    q: jax.Array
    scale: jax.Array

    @property
    def stored(self) -> jax.Array:
        return self.q

    def widened(self, dtype: Any = jnp.float32) -> jax.Array:
        return self.q.astype(dtype) * self.scale.reshape(*self.scale.shape, *(1,) * (self.q.ndim - self.scale.ndim))

    def rows(self, ids: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
        """Embedding lookup: the rows `ids` of a [vocab, embd] table, widened."""
        return self.q[ids].astype(dtype) * self.scale[ids][..., None]

    def matrix(self, n_in: int) -> Int8Weight:
        """The same weight as [out, in], its last `n_in` axes being its inputs."""
        return Int8Weight(_matrix(self.q, n_in), self.scale.reshape(-1))


LowBitWeight = Bf16Weight | Int8Weight  # what `quantize_params` makes of a dense weight or the embedding
LOW_BIT_KINDS = (Bf16Weight, Int8Weight)
for _kind in LOW_BIT_KINDS:  # decoding programs over them are kept on disk (`neo.infer.program_cache`)
    jax.export.register_namedtuple_serialization(_kind, serialized_name=f"neo.{_kind.__name__}")


def _matrix(w: jax.Array, n_in: int) -> jax.Array:
    return w.reshape(math.prod(w.shape[: w.ndim - n_in]), -1)


def quantize_int8(w: jax.Array, n_in: int = 1) -> Int8Weight:
    """Per-output-channel symmetric int8 of a weight whose last `n_in` axes are its inputs."""
    w = jnp.asarray(w, jnp.float32)
    axes = tuple(range(w.ndim - n_in, w.ndim))
    scale = jnp.max(jnp.abs(w), axis=axes) / 127.0
    scale = jnp.where(scale == 0, 1.0, scale)
    q = jnp.clip(jnp.round(w / jnp.expand_dims(scale, axes)), -127, 127).astype(jnp.int8)
    return Int8Weight(q, scale.astype(jnp.float32))


def quantize_params(params: Any, weights: str) -> Any:
    """Decoding-layout params with their dense weights and embedding stored as `weights` says (float32: as is)."""
    if weights not in WEIGHT_DTYPES:
        raise ConfigError(f"--weights {weights!r} is not one of: {', '.join(WEIGHT_DTYPES)}")
    held = held_as(params)
    if held != "float32" or weights == "float32":  # already converted (e.g. read so from the decoding cache)
        if held != weights:
            raise ConfigError(f"these parameters are held as {held}; they cannot be decoded as --weights {weights}")
        return params

    def convert(path: tuple[Any, ...], leaf: jax.Array) -> Any:
        name = getattr(path[-1], "key", None)
        if name not in _QUANTIZED or jnp.ndim(leaf) < 2:
            return leaf
        if weights == "bfloat16":
            return Bf16Weight(jnp.asarray(leaf, jnp.bfloat16))
        return quantize_int8(leaf, _IN_AXES.get(name, 1))

    return jax.jit(lambda p: jax.tree_util.tree_map_with_path(convert, p))(params)


def held_as(params: Any) -> str:
    """How `params` hold their dense weights: float32 (as trained, whatever the dtype), bfloat16 or int8."""
    kinds = {type(node) for node in jax.tree.leaves(params, is_leaf=is_low_bit) if is_low_bit(node)}
    return "bfloat16" if Bf16Weight in kinds else "int8" if Int8Weight in kinds else "float32"


def is_low_bit(node: Any) -> bool:
    """Whether `node` is a weight `quantize_params` made (bfloat16 or int8)."""
    return isinstance(node, LOW_BIT_KINDS)


def weight_bytes(params: Any) -> int:
    """Bytes the parameters occupy (what a batch-1 decoding step reads)."""
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(params))

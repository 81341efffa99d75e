"""Position information: learned absolute (GPT-Neo's wpe), axial (factorised wpe), or rotary on q/k.

Positions are explicit per-row integer arrays rather than `arange`, so left-padded batches in decoding get the
same embeddings as their unpadded selves.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from neo.model.common import dtype_of, normal, param
from neo.model.config import ModelConfig


class PositionEmbedding(nn.Module):
    """Returns [batch, length, embd] to add to the token embeddings (zeros for rotary)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, positions: jax.Array) -> jax.Array:
        cfg = self.config
        if cfg.rotary_emb:
            return jnp.zeros((*positions.shape, cfg.n_embd), dtype_of(cfg.precision))
        if cfg.axial_pos_emb:
            a, b = cfg.axial_pos_emb
            w1 = param(self, "axial_wpe_1", normal(0.01), (a, cfg.n_embd), (None, "embd"), cfg)
            w2 = param(self, "axial_wpe_2", normal(0.01), (b, cfg.n_embd), (None, "embd"), cfg)
            return (w1[positions // b] + w2[positions % b]) / 2  # GPT-Neo averages the two factors
        wpe = param(self, "wpe", normal(0.01), (cfg.n_ctx, cfg.n_embd), ("length", "embd"), cfg)
        return wpe[positions]


def apply_rotary(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotary embedding (rotate-half form) over the whole head: x [batch, length, heads, kv], positions [b, l]."""
    d = x.shape[-1]
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [b, l, d/2]
    angles = jnp.concatenate([angles, angles], -1)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], -1)
    return (x32 * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)

"""Normalisation before each sub-layer: LayerNorm (GPT-Neo), ScaleNorm, or ReZero.

ScaleNorm follows GPT-Neo: normalise over `embd`, then one learned scalar gain (init 1). ReZero replaces the
pre-norm by one learned scalar (init 0), so every block starts as the identity.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from neo.model.common import param
from neo.model.config import ModelConfig


def _normalise(x: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    return (x32 - mean) * jax.lax.rsqrt(var + eps)


class LayerNorm(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        g = param(self, "scale", nn.initializers.ones, (cfg.n_embd,), ("embd",), cfg)
        b = param(self, "bias", nn.initializers.zeros, (cfg.n_embd,), ("embd",), cfg)
        return (_normalise(x, cfg.layer_norm_epsilon) * g + b).astype(x.dtype)


class ScaleNorm(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        g = param(self, "scale", nn.initializers.ones, (), (), self.config)
        return (_normalise(x, self.config.layer_norm_epsilon) * g).astype(x.dtype)


class ReZero(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return x * param(self, "scale", nn.initializers.zeros, (), (), self.config)


def pre_norm(cfg: ModelConfig, name: str) -> nn.Module:
    """The block's pre-norm as the config selects it (the final ln_f is always a LayerNorm)."""
    cls = ReZero if cfg.rezero else ScaleNorm if cfg.scalenorm else LayerNorm
    return cls(cfg, name=name)

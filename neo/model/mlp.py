"""The feed-forward sub-layer: embd -> mlp -> embd with biases, the configured activation, optional GLU gate."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from neo.model.common import ACTIVATION_FNS, constrain, dense, dense_param, dense_std, normal, param
from neo.model.config import ModelConfig


def _in_float32(act: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """The activation computed in float32 and rounded once to the input's dtype: in bfloat16 each of its operations
    would round (and XLA CPU converts around every one of them, ~8 ms a layer for the benchmark model's GELU)."""
    return lambda x: act(x.astype(jnp.float32)).astype(x.dtype)


class MLP(nn.Module):
    config: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        d, m = cfg.n_embd, cfg.inner_dim
        act = _in_float32(ACTIVATION_FNS[cfg.activation_function])
        w_fc = dense_param(self, "c_fc", normal(dense_std(cfg, d)), (d, m), ("embd", "mlp"), cfg)
        b_fc = param(self, "c_fc_bias", nn.initializers.zeros, (m,), ("mlp",), cfg)
        h = dense(x, w_fc, "bld,dm->blm", cfg, b_fc)
        if cfg.mlp_glu:
            w_gate = dense_param(self, "c_gate", normal(dense_std(cfg, d)), (d, m), ("embd", "mlp"), cfg)
            b_gate = param(self, "c_gate_bias", nn.initializers.zeros, (m,), ("mlp",), cfg)
            h = h * act(dense(x, w_gate, "bld,dm->blm", cfg, b_gate))
        else:
            h = act(h)
        h = constrain(h, ("batch", "length", "mlp"))
        w_std = dense_std(cfg, m, residual_out=True)
        w_proj = dense_param(self, "c_proj", normal(w_std), (m, d), ("mlp", "embd"), cfg)
        b_proj = param(self, "c_proj_bias", nn.initializers.zeros, (d,), ("embd",), cfg)
        return dense(h, w_proj, "blm,md->bld", cfg, b_proj)

"""The feed-forward sub-layer: embd -> mlp -> embd with biases, the configured activation, optional GLU gate."""

from __future__ import annotations

import flax.linen as nn
import jax

from neo.model.common import ACTIVATION_FNS, constrain, dense, dense_param, dense_std, normal, param
from neo.model.config import ModelConfig


class MLP(nn.Module):
    config: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        d, m = cfg.n_embd, cfg.inner_dim
        act = ACTIVATION_FNS[cfg.activation_function]
        w_fc = dense_param(self, "c_fc", normal(dense_std(cfg, d)), (d, m), ("embd", "mlp"), cfg)
        b_fc = param(self, "c_fc_bias", nn.initializers.zeros, (m,), ("mlp",), cfg)
        h = dense(x, w_fc, "bld,dm->blm", cfg) + b_fc
        if cfg.mlp_glu:
            w_gate = dense_param(self, "c_gate", normal(dense_std(cfg, d)), (d, m), ("embd", "mlp"), cfg)
            b_gate = param(self, "c_gate_bias", nn.initializers.zeros, (m,), ("mlp",), cfg)
            h = h * act(dense(x, w_gate, "bld,dm->blm", cfg) + b_gate)
        else:
            h = act(h)
        h = constrain(h, ("batch", "length", "mlp"))
        w_std = dense_std(cfg, m, residual_out=True)
        w_proj = dense_param(self, "c_proj", normal(w_std), (m, d), ("mlp", "embd"), cfg)
        b_proj = param(self, "c_proj_bias", nn.initializers.zeros, (d,), ("embd",), cfg)
        return dense(h, w_proj, "blm,md->bld", cfg) + b_proj

"""Mixture-of-Experts feed-forward (GShard-style top-2 gating with expert capacity and a load-balancing loss).

Each token goes to its two highest-probability experts, weighted by their renormalised gate values. An expert takes
at most `capacity` tokens per sequence, handed out in token order so that routing is causal (GShard fills all top-1
choices first, which lets a later token evict an earlier one); tokens beyond it are dropped from that expert (their
residual passes through unchanged). Capacity is per forward call, so incremental decoding matches the full forward
only while no token is dropped. The aux loss E * sum_e(f_e * P_e) — f_e the fraction of
tokens whose first choice is e, P_e the mean gate probability of e — is 1 when balanced; it is sown, times
`aux_loss_coef`, into the "losses" collection as `moe_aux`.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from neo.model.common import ACTIVATION_FNS, constrain, dense_std, normal, param
from neo.model.config import ModelConfig


def expert_capacity(cfg: ModelConfig, length: int) -> int:
    m = cfg.moe_params
    return max(1, math.ceil(m.capacity_factor * 2 * length / m.num_experts))


def top2_routing(probs: jax.Array, capacity: int) -> tuple[jax.Array, jax.Array]:
    """probs [b, l, e] -> (combine weights [b, l, e, c], aux loss scalar)."""
    e = probs.shape[-1]
    first = jax.nn.one_hot(jnp.argmax(probs, -1), e, dtype=probs.dtype)
    second = jax.nn.one_hot(jnp.argmax(probs * (1 - first), -1), e, dtype=probs.dtype)
    aux = e * jnp.mean(jnp.sum(first.mean(1) * probs.mean(1), -1))

    # Seats are handed out token by token (both choices of earlier tokens first), so routing stays causal.
    earlier = jnp.cumsum(first + second, axis=1) - first - second
    pos1, pos2 = earlier * first, earlier * second
    keep1, keep2 = first * (pos1 < capacity), second * (pos2 < capacity)

    g1, g2 = jnp.sum(probs * first, -1), jnp.sum(probs * second, -1)
    norm = g1 + g2
    g1, g2 = g1 / norm, g2 / norm
    seat1 = jax.nn.one_hot(jnp.sum(pos1, -1).astype(jnp.int32), capacity, dtype=probs.dtype)
    seat2 = jax.nn.one_hot(jnp.sum(pos2, -1).astype(jnp.int32), capacity, dtype=probs.dtype)
    combine = (g1[..., None, None] * keep1[..., None] * seat1[:, :, None, :]) + (
        g2[..., None, None] * keep2[..., None] * seat2[:, :, None, :]
    )
    return combine, aux


class MoE(nn.Module):
    config: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, m = self.config, self.config.moe_params
        d, e, hdim = cfg.n_embd, m.num_experts, m.hidden_size or cfg.inner_dim
        router = param(self, "router", normal(dense_std(cfg, d)), (d, e), ("embd", "experts"), cfg)
        logits = jnp.einsum("bld,de->ble", x.astype(jnp.float32), router.astype(jnp.float32))
        combine, aux = top2_routing(jax.nn.softmax(logits, -1), expert_capacity(cfg, x.shape[1]))
        self.sow("losses", "moe_aux", m.aux_loss_coef * aux)

        dispatch = (combine > 0).astype(x.dtype)
        inputs = constrain(jnp.einsum("blec,bld->becd", dispatch, x), ("batch", "experts", None, "embd"))
        wi = param(self, "wi", normal(dense_std(cfg, d)), (e, d, hdim), ("experts", "embd", "mlp"), cfg)
        bi = param(self, "wi_bias", nn.initializers.zeros, (e, hdim), ("experts", "mlp"), cfg)
        wo_std = dense_std(cfg, hdim, residual_out=True)
        wo = param(self, "wo", normal(wo_std), (e, hdim, d), ("experts", "mlp", "embd"), cfg)
        bo = param(self, "wo_bias", nn.initializers.zeros, (e, d), ("experts", "embd"), cfg)
        h = ACTIVATION_FNS[cfg.activation_function](jnp.einsum("becd,edh->bech", inputs, wi) + bi[:, None])
        h = nn.Dropout(m.dropout_rate)(h, deterministic=self.deterministic)
        out = jnp.einsum("bech,ehd->becd", h, wo) + bo[:, None]
        return jnp.einsum("becd,blec->bld", out, combine.astype(out.dtype))

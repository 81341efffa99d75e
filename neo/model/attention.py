"""Attention exactly as GPT-Neo computes it, plus memory key/values, rotary and a KV cache.

- q/k/v projections have no bias, the output projection has one; there is NO 1/sqrt(d) scaling of the scores
  (GPT-Neo puts it in the q initialiser, std (n_embd * head_dim)^-1/2); scores and softmax run in float32.
- `global`: causal over all keys; `local`: query at position i sees keys i-w+1 .. i; `linear`: causal linear
  attention (softmax feature map on q, exp on k, cumulative sums); MLM models attend bidirectionally.
- Masks come from explicit per-key positions and validity, so one code path serves training (keys = this chunk),
  prefill and one-token decode (keys = the cache + this chunk), left-padded rows included. A local layer's cache is
  a ring buffer of only its window.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from neo.model.common import constrain, dense_std, normal, param
from neo.model.config import ModelConfig
from neo.model.positions import apply_rotary

Cache = dict[str, jax.Array]  # k, v: [batch, slots, heads, kv]; pos: [batch, slots] int32; valid: [batch, slots]
LINEAR_EPS = 1e-6


def attention_mask(cfg: ModelConfig, kind: str, q_pos: jax.Array, k_pos: jax.Array, k_valid: jax.Array) -> jax.Array:
    """[batch, q, k] bool: which keys each query may see."""
    q, k = q_pos[:, :, None], k_pos[:, None, :]
    mask = jnp.broadcast_to(k_valid[:, None, :], (q_pos.shape[0], q_pos.shape[1], k_pos.shape[1]))
    if cfg.causal:
        mask &= k <= q
    if kind == "local":
        mask &= jnp.abs(q - k) < cfg.window_size
    return mask


def write_cache(cache: Cache, new: Cache, index: jax.Array) -> Cache:
    """Write a chunk's entries at slots index.. (mod the cache size): a ring buffer for local windows."""
    size, length = cache["pos"].shape[1], new["pos"].shape[1]
    keep = min(size, length)  # a chunk longer than the ring only leaves its last `size` entries
    slots = (index + length - keep + jnp.arange(keep)) % size
    return {name: cache[name].at[:, slots].set(new[name][:, length - keep :]) for name in cache}


class Attention(nn.Module):
    config: ModelConfig
    kind: str  # global | local | linear
    deterministic: bool = True

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        valid: jax.Array,
        cache: Cache | None = None,
        cache_index: jax.Array | None = None,
    ) -> tuple[jax.Array, Cache | None]:
        cfg = self.config
        d, h, hd = cfg.n_embd, cfg.n_head, cfg.head_dim
        axes_in = ("embd", "heads", "kv")
        wq = param(self, "q", normal(dense_std(cfg, d, (d * hd) ** -0.5)), (d, h, hd), axes_in, cfg)
        wk = param(self, "k", normal(dense_std(cfg, d, d**-0.5)), (d, h, hd), axes_in, cfg)
        wv = param(self, "v", normal(dense_std(cfg, d, d**-0.5)), (d, h, hd), axes_in, cfg)
        o_std = dense_std(cfg, d, d**-0.5, residual_out=True)
        wo = param(self, "o", normal(o_std), (h, hd, d), ("heads", "kv", "embd"), cfg)
        bo = param(self, "o_bias", nn.initializers.zeros, (d,), ("embd",), cfg)

        q, k, v = (
            constrain(jnp.einsum("bld,dhk->blhk", x, w), ("batch", "length", "heads", "kv")) for w in (wq, wk, wv)
        )
        if cfg.rotary_emb:
            q, k = apply_rotary(q, positions), apply_rotary(k, positions)

        new_cache = None
        keys, values, k_pos, k_valid = k, v, positions, valid
        if cache is not None:
            chunk = {"k": k.astype(cache["k"].dtype), "v": v.astype(cache["v"].dtype), "pos": positions, "valid": valid}
            keys, values, k_pos, k_valid = (
                jnp.concatenate([cache[n], chunk[n]], axis=1) for n in ("k", "v", "pos", "valid")
            )
            new_cache = write_cache(cache, chunk, cache_index)
        mask = attention_mask(cfg, self.kind, positions, k_pos, k_valid)

        if cfg.num_mem_kv:
            m = cfg.num_mem_kv
            mem_k = param(self, "mem_k", normal(0.02), (m, h, hd), (None, "heads", "kv"), cfg)
            mem_v = param(self, "mem_v", normal(0.02), (m, h, hd), (None, "heads", "kv"), cfg)
            b = x.shape[0]
            keys = jnp.concatenate([jnp.broadcast_to(mem_k, (b, m, h, hd)).astype(keys.dtype), keys], axis=1)
            values = jnp.concatenate([jnp.broadcast_to(mem_v, (b, m, h, hd)).astype(values.dtype), values], axis=1)
            mask = jnp.concatenate([jnp.ones((*mask.shape[:2], m), bool), mask], axis=2)

        if self.kind == "linear":
            out = self._linear(q, keys, values, mask, cumulative=cache is None and cfg.causal)
        else:
            out = self._softmax(q, keys, values, mask)
        out = constrain(out.astype(x.dtype), ("batch", "length", "heads", "kv"))
        return jnp.einsum("blhk,hkd->bld", out, wo) + bo, new_cache

    def _softmax(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
        q32, k32, v32 = (t.astype(jnp.float32) for t in (q, k, v))
        dropout_on = self.config.attn_dropout > 0 and not self.deterministic
        if not dropout_on:  # the fused path when nothing needs the probabilities themselves
            return jax.nn.dot_product_attention(q32, k32, v32, mask=mask[:, None], scale=1.0)
        scores = jnp.einsum("bqhk,bshk->bhqs", q32, k32)
        scores = jnp.where(mask[:, None], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1)
        probs = nn.Dropout(self.config.attn_dropout)(probs, deterministic=False)
        return jnp.einsum("bhqs,bshk->bqhk", probs, v32)

    def _linear(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, cumulative: bool) -> jax.Array:
        """GPT-Neo's linear attention; the cumulative-sum form in training, the masked form against a cache."""
        q32, k32, v32 = (t.astype(jnp.float32) for t in (q, k, v))
        qf = jax.nn.softmax(q32, axis=-1)
        if not self.config.causal:  # GPT-Neo's non-causal form: keys normalised over the sequence
            k32 = jnp.where(mask[:, 0, :, None, None], k32, -jnp.inf)  # bidirectional: row 0 = key validity
            kf = jax.nn.softmax(k32, axis=1)
            return jnp.einsum("blhi,bhio->blho", qf, jnp.einsum("bshi,bsho->bhio", kf, v32))
        kf = jnp.exp(k32)
        if cumulative:
            kf = kf * mask[:, -1, :, None, None]  # drop padded keys (the last query sees every valid key)
            context = jnp.cumsum(jnp.einsum("blhi,blho->blhio", kf, v32), axis=1)
            denom = jnp.einsum("blhi,blhi->blh", qf, jnp.cumsum(kf, axis=1) + LINEAR_EPS)
            return jnp.einsum("blhi,blhio->blho", qf, context) / denom[..., None]
        scores = jnp.einsum("bqhi,bshi->bhqs", qf, kf) * mask[:, None]
        out = jnp.einsum("bhqs,bsho->bqho", scores, v32)
        return out / (scores.sum(-1).transpose(0, 2, 1)[..., None] + LINEAR_EPS)

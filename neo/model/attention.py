"""Attention exactly as GPT-Neo computes it, plus memory key/values, rotary and a KV cache.

- q/k/v projections have no bias, the output projection has one; there is NO 1/sqrt(d) scaling of the scores
  (GPT-Neo puts it in the q initialiser, std (n_embd * head_dim)^-1/2); scores and softmax run in float32.
- `global`: causal over all keys; `local`: query at position i sees keys i-w+1 .. i; `linear`: causal linear
  attention (softmax feature map on q, exp on k, cumulative sums); MLM models attend bidirectionally.
- Masks come from explicit per-key positions and validity, left-padded rows included. With a KV cache (see
  neo.model.decode) the layer only reads the cache and returns the chunk's own entries; `write_cache` stores them
  in a separate jitted call on the donated cache. A multi-token chunk is a prefill into an empty cache: it attends
  to itself exactly as in training. A one-token chunk is a decode step: it attends to the cache as it was plus its
  own key/value. A local layer's cache is a ring buffer of only its window (the slot a step overwrites holds a key
  just outside the window).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from neo.model import cpu_matvec
from neo.model.common import constrain, dense, dense_param, dense_std, dense_three, normal, param
from neo.model.config import ModelConfig
from neo.model.kernels import kernels_for
from neo.model.positions import apply_rotary

Cache = dict[str, jax.Array]  # k, v: [batch, heads, slots, kv]; pos: [batch, slots] int32; valid: [batch, slots]
LINEAR_EPS = 1e-6
_SLOT_AXIS = {"k": -2, "v": -2, "pos": -1, "valid": -1}  # heads before slots: the decode dots read it in place
# logical axes of one layer's cache entries: sharded like the keys/values, slots along `memory_length` (replicated
# unless the layout maps it, as GPT-Neo's XL layout does)
KV_AXES = ("batch", "heads", "memory_length", "kv")
CACHE_AXES = {"k": KV_AXES, "v": KV_AXES, "pos": ("batch", "memory_length")}
CACHE_AXES["valid"] = CACHE_AXES["pos"]
# a bfloat16 KV cache is held as its bits: XLA CPU widens a whole bfloat16 buffer to float32 to update one slot of it
# (0.3 ms per layer and step for neo_125M at 384 slots), a uint16 one it updates in place
BF16_BITS = jnp.uint16


def to_cache(a: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """`a` as a cache of `dtype` holds it (BF16_BITS: rounded to bfloat16, as its bits)."""
    if dtype == BF16_BITS:
        return lax.bitcast_convert_type(a.astype(jnp.bfloat16), BF16_BITS)
    return a.astype(dtype)


def from_cache(a: jax.Array) -> jax.Array:
    """Cached keys or values as numbers (bfloat16 from BF16_BITS)."""
    return lax.bitcast_convert_type(a, jnp.bfloat16) if a.dtype == BF16_BITS else a


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
    """Write a chunk's entries at slots index.. (mod the cache size): a ring buffer for local windows.

    Entries may carry leading (scanned `layers`) axes. Jit it apart from the step that reads the cache, with the
    cache donated: then the update is the buffer's only use and XLA writes the slot in place. With the reads and
    the update in one program XLA CPU copied whole caches: every step at batch 1 (~7 ms of 27), and at batch 8
    when the step attended to the cache before writing it (2.7x slower per step).
    """
    size, length = cache["pos"].shape[-1], new["pos"].shape[-1]
    out = {}
    for n in cache:
        axis = cache[n].ndim + _SLOT_AXIS[n]
        if length == 1:  # a decode step
            out[n] = lax.dynamic_update_slice_in_dim(cache[n], new[n], index % size, axis)
        else:  # a chunk longer than the ring only leaves its last `size` entries
            keep = min(size, length)
            slots = (index + length - keep + jnp.arange(keep)) % size
            chunk = lax.slice_in_dim(new[n], length - keep, length, axis=axis)
            out[n] = cache[n].at[(slice(None),) * axis + (slots,)].set(chunk)
        out[n] = constrain(out[n], ("layers",) * (cache[n].ndim - len(CACHE_AXES[n])) + CACHE_AXES[n])
    return out


class Attention(nn.Module):
    config: ModelConfig
    kind: str  # global | local | linear
    deterministic: bool = True
    # every row's positions are 0..length-1, all valid (training): the mask is then known when the step is traced,
    # and the kernels (`neo.model.kernels`, chosen by model.attention_impl) skip the keys it hides
    in_order: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        valid: jax.Array,
        cache: Cache | None = None,
    ) -> tuple[jax.Array, Cache | None]:
        cfg = self.config
        d, h, hd = cfg.n_embd, cfg.n_head, cfg.head_dim
        axes_in = ("embd", "heads", "kv")
        wq = dense_param(self, "q", normal(dense_std(cfg, d, (d * hd) ** -0.5)), (d, h, hd), axes_in, cfg)
        wk = dense_param(self, "k", normal(dense_std(cfg, d, d**-0.5)), (d, h, hd), axes_in, cfg)
        wv = dense_param(self, "v", normal(dense_std(cfg, d, d**-0.5)), (d, h, hd), axes_in, cfg)
        o_std = dense_std(cfg, d, d**-0.5, residual_out=True)
        wo = dense_param(self, "o", normal(o_std), (h, hd, d), ("heads", "kv", "embd"), cfg, n_in=2)
        bo = param(self, "o_bias", nn.initializers.zeros, (d,), ("embd",), cfg)

        q, k, v = dense_three(x, (wq, wk, wv), "bld,dhk->blhk", cfg)
        q = constrain(q, ("batch", "length", "heads", "kv"))
        # keys and values: their length is the one attention reads (`memory_length`), not the queries' own
        k, v = (constrain(a, ("batch", "memory_length", "heads", "kv")) for a in (k, v))
        if cfg.rotary_emb:
            q, k = apply_rotary(q, positions), apply_rotary(k, positions)

        entries = None
        if cache is not None:  # this chunk's entries, in the cache's layout and dtype
            heads_first = (0, 2, 1, 3)
            entries = {"k": k.transpose(heads_first), "v": v.transpose(heads_first), "pos": positions, "valid": valid}
            entries = {n: constrain(to_cache(a, cache[n].dtype), CACHE_AXES[n]) for n, a in entries.items()}
        if cache is not None and x.shape[1] == 1:  # a decode step: the cache so far plus this token
            out = self._decode(q, cache, entries, positions)
        else:  # training, or a prefill into an empty cache: the chunk attends to itself
            mask = attention_mask(cfg, self.kind, positions, positions, valid)
            keys, values = k, v
            if cfg.num_mem_kv:
                mem_k, mem_v = self._memory()
                b, m = x.shape[0], cfg.num_mem_kv
                keys = jnp.concatenate([jnp.broadcast_to(mem_k, (b, m, h, hd)).astype(keys.dtype), keys], axis=1)
                values = jnp.concatenate([jnp.broadcast_to(mem_v, (b, m, h, hd)).astype(values.dtype), values], axis=1)
                mask = jnp.concatenate([jnp.ones((*mask.shape[:2], m), bool), mask], axis=2)
            if self.kind == "linear":
                out = self._linear(q, keys, values, mask)
            else:
                in_order = self.in_order and cfg.causal and not cfg.num_mem_kv
                window = cfg.window_size if self.kind == "local" else None
                dropout = None
                if cfg.attn_dropout > 0 and not self.deterministic:
                    dropout = nn.Dropout(cfg.attn_dropout, deterministic=False)
                kernels = kernels_for(cfg.attention_impl, cfg.precision)
                out = kernels.attention(q, keys, values, mask, window, in_order, dropout)
        out = constrain(out.astype(x.dtype), ("batch", "length", "heads", "kv"))
        return dense(out, wo, "blhk,hkd->bld", cfg, bo), entries

    def _memory(self) -> tuple[jax.Array, jax.Array]:
        """The learned memory key/values every query may attend to: [num_mem_kv, heads, kv] each."""
        cfg = self.config
        shape, axes = (cfg.num_mem_kv, cfg.n_head, cfg.head_dim), (None, "heads", "kv")
        return param(self, "mem_k", normal(0.02), shape, axes, cfg), param(
            self, "mem_v", normal(0.02), shape, axes, cfg
        )

    def _decode(self, q: jax.Array, cache: Cache, own: Cache, positions: jax.Array) -> jax.Array:
        """One query per row, q [b, 1, heads, kv], over the cache before this step, the step's `own` key/value and
        any memory kv.

        Reads the cache in its [b, heads, slots, kv] layout: the dots batch over (b, heads) with no transpose or
        concatenation of the cache, so a step costs one read of it. The slot this step will overwrite is masked
        already: empty in a global cache, a key just outside the window in a local ring.
        """
        cfg, b, f32 = self.config, q.shape[0], jnp.float32
        mask = attention_mask(cfg, self.kind, positions, cache["pos"], cache["valid"])[:, None]  # [b, 1, 1, slots]
        blocks = [(cache["k"], cache["v"], mask), (own["k"], own["v"], own["valid"][:, None, None])]
        if cfg.num_mem_kv:
            shape = (b, cfg.n_head, cfg.num_mem_kv, cfg.head_dim)
            mem_k, mem_v = (jnp.broadcast_to(t.transpose(1, 0, 2)[None], shape) for t in self._memory())
            blocks.insert(0, (mem_k, mem_v, jnp.ones((b, 1, 1, cfg.num_mem_kv), bool)))
        qh = q.transpose(0, 2, 1, 3).astype(f32)  # [b, heads, 1, kv]
        if self.kind == "linear":  # few models use it: concatenate the blocks and use the masked form
            keys, values, mask = (
                jnp.concatenate([from_cache(blk[i]).astype(f32) for blk in blocks], axis=-2 if i < 2 else -1)
                for i in range(3)
            )
            qf = jax.nn.softmax(qh, axis=-1)
            if not cfg.causal:  # keys normalised over the valid sequence
                kf = jax.nn.softmax(jnp.where(mask[:, :, 0, :, None], keys, -jnp.inf), axis=2)
                out = jnp.einsum("bhqi,bhio->bhqo", qf, jnp.einsum("bhsi,bhso->bhio", kf, values))
            else:
                scores = jnp.einsum("bhqi,bhsi->bhqs", qf, jnp.exp(keys)) * mask
                out = jnp.einsum("bhqs,bhso->bhqo", scores, values) / (scores.sum(-1, keepdims=True) + LINEAR_EPS)
            return out.transpose(0, 2, 1, 3)
        kernel = cpu_matvec.handles_cache(cache["k"])  # the cache's products at the memory's rate on CPU
        scores = []
        for k, _, m in blocks:
            if kernel and k is cache["k"]:
                dots = cpu_matvec.cache_scores(qh[:, :, 0], k)[:, :, None]
            else:
                dots = jnp.einsum("bhqk,bhsk->bhqs", qh, from_cache(k).astype(f32))
            scores.append(jnp.where(m, dots, jnp.finfo(f32).min))
        probs = jax.nn.softmax(jnp.concatenate(scores, axis=-1), axis=-1)
        out, start = jnp.zeros_like(qh), 0
        for k, v, _ in blocks:
            p, start = probs[..., start : start + k.shape[2]], start + k.shape[2]
            if kernel and v is cache["v"]:
                out = out + cpu_matvec.cache_mix(p[:, :, 0], v)[:, :, None]
            else:
                out = out + jnp.einsum("bhqs,bhsk->bhqk", p, from_cache(v).astype(f32))
        return out.transpose(0, 2, 1, 3)  # [b, 1, heads, kv]

    def _linear(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
        """GPT-Neo's linear attention over a whole chunk: the cumulative-sum form when causal."""
        q32, k32, v32 = (t.astype(jnp.float32) for t in (q, k, v))
        qf = jax.nn.softmax(q32, axis=-1)
        if not self.config.causal:  # GPT-Neo's non-causal form: keys normalised over the sequence
            k32 = jnp.where(mask[:, 0, :, None, None], k32, -jnp.inf)  # bidirectional: row 0 = key validity
            kf = jax.nn.softmax(k32, axis=1)
            return jnp.einsum("blhi,bhio->blho", qf, jnp.einsum("bshi,bsho->bhio", kf, v32))
        kf = jnp.exp(k32) * mask[:, -1, :, None, None]  # drop padded keys (the last query sees every valid key)
        context = jnp.cumsum(jnp.einsum("blhi,blho->blhio", kf, v32), axis=1)
        denom = jnp.einsum("blhi,blhi->blh", qf, jnp.cumsum(kf, axis=1) + LINEAR_EPS)
        return jnp.einsum("blhi,blhio->blho", qf, context) / denom[..., None]

"""GPT-Neo: embeddings, a stack of pre-norm blocks, final LayerNorm, tied (or untied) output head.

    x = wte[tokens] + positions;  for each block: x += drop(attn(ln_1(x)));  x += drop(mlp(ln_2(x)))
    logits = ln_f(x) @ wte.T   (float32)

The blocks run under `nn.scan` over the shortest repeating pattern of layer kinds (e.g. global/local scans as one
two-layer block), so compile time stays flat in depth; the scanned parameters carry a leading `layers` axis.
Auxiliary losses (MoE balance, z-loss) are sown into the "losses" collection; the trainer adds them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from neo.model import cpu_matvec
from neo.model.attention import Attention, Cache
from neo.model.common import (
    FEW_ROWS,
    constrain,
    dense_param,
    dense_std,
    dtype_of,
    embed,
    many_rows_times_weight,
    normal,
    param,
    rows_times_weight,
)
from neo.model.config import ModelConfig
from neo.model.mlp import MLP
from neo.model.moe import MoE
from neo.model.norms import LayerNorm, pre_norm
from neo.model.objectives import z_loss
from neo.model.positions import PositionEmbedding
from neo.model.quantize import LowBitWeight


def _for_cpu_kernels(policy: Callable[..., bool]) -> Callable[..., bool]:
    """`policy` fitted to neo's CPU kernels: a bf16 product accumulated in float32 is recomputed, not saved (its
    output is rounded right after, and saving the float32 one cost more than recomputing it: 12% of the benchmark
    model's bf16 CPU step, benchmarks/README.md), and the outputs of the float32 attention kernel, a product too,
    are saved like a dot's (its forward then runs once a step)."""

    def save(prim: Any, *args: Any, **params: Any) -> bool:
        if params.get("target_name") == cpu_matvec.ATTEND:
            return True
        widened = params.get("preferred_element_type") == jnp.float32 and args[0].dtype == jnp.bfloat16
        return policy(prim, *args, **params) and not widened

    return save


REMAT_POLICIES = {
    "full": None,  # save nothing, recompute the block in the backward pass
    "dots": _for_cpu_kernels(jax.checkpoint_policies.checkpoint_dots),
    "dots_no_batch": _for_cpu_kernels(jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims),
}


class Block(nn.Module):
    config: ModelConfig
    kind: str  # attention type of this layer
    moe: bool = False
    deterministic: bool = True
    in_order: bool = False  # see Attention.in_order

    @nn.compact
    def __call__(self, x, positions, valid, cache: Cache | None) -> tuple[jax.Array, Cache | None]:
        cfg = self.config
        drop = nn.Dropout(cfg.res_dropout, deterministic=self.deterministic)
        ffn_scale = 0.5 if cfg.macaron else 1.0
        if cfg.macaron:
            x = x + ffn_scale * drop(MLP(cfg, self.deterministic, name="mlp_0")(pre_norm(cfg, "ln_0")(x)))
        if self.kind != "none":
            attn = Attention(cfg, self.kind, self.deterministic, self.in_order, name="attn")
            a, cache = attn(pre_norm(cfg, "ln_1")(x), positions, valid, cache)
            x = x + drop(a)
        ffn = MoE(cfg, self.deterministic, name="moe") if self.moe else MLP(cfg, self.deterministic, name="mlp")
        x = x + ffn_scale * drop(ffn(pre_norm(cfg, "ln_2")(x)))
        return constrain(x, ("batch", "length", "embd")), cache


class LayerGroup(nn.Module):
    """One period of the layer pattern: the body of the scan."""

    config: ModelConfig
    deterministic: bool = True
    in_order: bool = False

    @nn.compact
    def __call__(self, carry, caches: list[Cache] | None):
        x, positions, valid = carry
        kinds = self.config.layer_kinds()[: self.config.scan_period()]
        new = []
        for j, (kind, moe) in enumerate(kinds):
            block = Block(self.config, kind, moe, self.deterministic, self.in_order, name=f"layer_{j}")
            x, c = block(x, positions, valid, None if caches is None else caches[j])
            new.append(c)
        return (x, positions, valid), (None if caches is None else new)


def _block_class(cfg: ModelConfig, cls: type[nn.Module]) -> type[nn.Module]:
    if cfg.remat_policy == "none":
        return cls
    return nn.remat(cls, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)


class GPTNeo(nn.Module):
    """The model, in three named modes: `__call__` (logits of every position), `features` (the final hidden states,
    for the trainer's fused loss) and `decode` (one chunk against a KV cache)."""

    config: ModelConfig

    def __call__(self, tokens: jax.Array, *, deterministic: bool = True, positions: jax.Array | None = None) -> Any:
        """tokens int32 [batch, length] -> float32 logits [batch, length, n_vocab]. Rows are 0..length-1 unless
        `positions` [batch, length] says otherwise."""
        return self._run(tokens, positions=positions, deterministic=deterministic)[0]

    def features(self, tokens: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """The final hidden states (after ln_f) [batch, length, embd] instead of logits: the trainer fuses the vocab
        projection into its loss (`neo.model.objectives.lm_head_loss`, with `output_embedding`)."""
        return self._run(tokens, deterministic=deterministic, head=False)[0]

    def decode(
        self, tokens: jax.Array, positions: jax.Array, valid: jax.Array, cache: list[Cache]
    ) -> tuple[jax.Array, list[Cache]]:
        """(float32 logits of each row's last position [batch, n_vocab], the chunk's cache entries).

        The cache (see neo.model.decode) is only read; the entries are shaped like it with the chunk's length as
        slots, for `neo.model.attention.write_cache` to store. `positions`/`valid` describe the chunk (left-padded
        rows have valid=False on their padding). Only the last position is projected to the vocab: decoding needs no
        others, and for a 128-token prefill the full projection is a third of the work.
        """
        logits, entries = self._run(tokens, positions=positions, valid=valid, cache=cache, last_only=True)
        return logits[:, -1], entries

    @nn.compact
    def _run(
        self,
        tokens: jax.Array,
        *,
        positions: jax.Array | None = None,
        valid: jax.Array | None = None,
        cache: list[Cache] | None = None,
        deterministic: bool = True,
        last_only: bool = False,
        head: bool = True,
    ) -> tuple[jax.Array, list[Cache] | None]:
        """(logits, or hidden states without `head`; the chunk's cache entries when `cache` is given, else None)."""
        cfg = self.config
        length = tokens.shape[1]
        in_order = positions is None and valid is None and cache is None  # rows are 0..length-1: see Attention
        # Without explicit positions/validity (training) every row is 0..length-1, all valid: one [1, length] row
        # broadcasts, so the attention mask is a single [length, length] pattern, not one per batch row.
        if positions is None:
            positions = jnp.arange(length, dtype=jnp.int32)[None]
        if valid is None:
            valid = jnp.ones(positions.shape, bool)

        wte = param(self, "wte", normal(0.02), (cfg.n_vocab, cfg.n_embd), ("vocab", "embd"), cfg)
        x = embed(wte, tokens, cfg)
        x = x + PositionEmbedding(cfg, name="pos")(positions).astype(x.dtype)
        x = nn.Dropout(cfg.embed_dropout, deterministic=deterministic)(x)
        x = constrain(x, ("batch", "length", "embd"))

        if cfg.scan_layers:
            period = cfg.scan_period()
            scanned = nn.scan(
                _block_class(cfg, LayerGroup),
                variable_axes={"params": 0, "losses": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=0,
                length=cfg.n_layer // period,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            (x, *_), cache = scanned(cfg, deterministic, in_order, name="blocks")((x, positions, valid), cache)
        else:
            new_cache = []
            for i, (kind, moe) in enumerate(cfg.layer_kinds()):
                block = _block_class(cfg, Block)(cfg, kind, moe, deterministic, in_order, name=f"h_{i}")
                x, c = block(x, positions, valid, None if cache is None else cache[i])
                new_cache.append(c)
            cache = None if cache is None else new_cache

        x = LayerNorm(cfg, name="ln_f")(x[:, -1:] if last_only else x)
        lm_head = wte  # [vocab, embd]
        if cfg.no_weight_tie:  # [embd, vocab], or [vocab, embd] when weights_out_first
            head_std = normal(dense_std(cfg, cfg.n_embd))
            lm_head = dense_param(self, "lm_head", head_std, (cfg.n_embd, cfg.n_vocab), ("embd", "vocab"), cfg)
        if not head:
            return x, cache
        if cfg.no_weight_tie and not cfg.weights_out_first:
            logits = jnp.einsum("bld,dv->blv", x, lm_head, preferred_element_type=jnp.float32)
        else:
            logits = _logits(x, lm_head)
        logits = constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))
        if cfg.z_loss:
            self.sow("losses", "z_loss", z_loss(jax.nn.logsumexp(logits, -1), cfg.z_loss))
        return logits, cache


def _logits(x: jax.Array, head: jax.Array | LowBitWeight) -> jax.Array:
    """x [b, l, d] times a head stored [vocab, embd], in float32; few rows (decoding) via `rows_times_weight`."""
    b, length, d = x.shape
    x2 = x.reshape(b * length, d)
    if b * length > FEW_ROWS:
        return many_rows_times_weight(x2, head, preferred_element_type=jnp.float32).reshape(b, length, -1)
    return rows_times_weight(x2, head, preferred_element_type=jnp.float32).reshape(b, length, -1)


def output_embedding(cfg: ModelConfig, params: Any) -> jax.Array:
    """The output projection as [vocab, embd] in the compute dtype: wte when tied, else lm_head transposed (the
    training layout: `weights_out_first` is off)."""
    params = nn.meta.unbox(params)
    head = params["lm_head"].T if cfg.no_weight_tie else params["wte"]
    return head.astype(dtype_of(cfg.precision))


def total_aux_loss(losses: Any) -> jax.Array:
    """Sum of every entry of a "losses" collection (what the trainer adds to the LM loss)."""
    leaves = jax.tree.leaves(losses)
    return sum((jnp.sum(leaf) for leaf in leaves), jnp.zeros((), jnp.float32))


def model_dtype(cfg: ModelConfig) -> jnp.dtype:
    return dtype_of(cfg.precision)

"""Incremental decoding: prefill the prompt into a KV cache, then one token per step.

Prompts of different lengths share a batch by left-padding to a power-of-two bucket; each row keeps its own
positions (0 at its first real token) and its padding is masked out of every attention, so a batched row equals
its unbatched self. Global layers cache every slot, local layers a ring buffer of their window only. The forward
functions are jitted with the cache index as a traced scalar: one compile per (batch, bucket, cache length), never
one per token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from neo.errors import ConfigError
from neo.model.attention import Cache
from neo.model.common import dtype_of
from neo.model.config import ModelConfig
from neo.model.transformer import GPTNeo


def _layer_cache(cfg: ModelConfig, kind: str, batch: int, length: int, lead: tuple[int, ...]) -> Cache:
    if kind == "none":
        return {}
    slots = min(cfg.window_size, length) if kind == "local" else length
    kv = (*lead, batch, slots, cfg.n_head, cfg.head_dim)
    return {
        "k": jnp.zeros(kv, dtype_of(cfg.precision)),
        "v": jnp.zeros(kv, dtype_of(cfg.precision)),
        "pos": jnp.zeros((*lead, batch, slots), jnp.int32),
        "valid": jnp.zeros((*lead, batch, slots), bool),
    }


def init_cache(cfg: ModelConfig, batch: int, length: int) -> list[Cache]:
    """An empty cache for `length` total slots (prompt bucket + new tokens), shaped like the layer stack."""
    kinds = [kind for kind, _ in cfg.layer_kinds()]
    if not cfg.scan_layers:
        return [_layer_cache(cfg, kind, batch, length, ()) for kind in kinds]
    period = cfg.scan_period()
    return [_layer_cache(cfg, kind, batch, length, (cfg.n_layer // period,)) for kind in kinds[:period]]


_FORWARDS: dict[str, Callable] = {}


def _build_forward(cfg: ModelConfig) -> Callable:
    model = GPTNeo(cfg)

    @partial(jax.jit, donate_argnums=4)  # the cache is updated in place, never copied per token
    def forward(params, tokens, positions, valid, cache, index):
        logits, cache = model.apply(
            {"params": params}, tokens, positions=positions, valid=valid, cache=cache, cache_index=index
        )
        return logits[:, -1], cache

    return forward


def forward_fn(cfg: ModelConfig) -> Callable:
    """jit(params, tokens, positions, valid, cache, index) -> (last-position logits, cache), cached per config."""
    key = repr(cfg)
    if key not in _FORWARDS:
        _FORWARDS[key] = _build_forward(cfg)
    return _FORWARDS[key]


@jax.jit
def sample_logits(logits: jax.Array, key: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array):
    """One token per row from float32 logits [batch, vocab] with temperature, top-k (0 = off), top-p (1 = off)."""
    logits = logits.astype(jnp.float32) / temperature
    ordered = jnp.sort(logits, axis=-1)[:, ::-1]
    kth = jnp.take_along_axis(ordered, jnp.full((logits.shape[0], 1), jnp.maximum(top_k, 1) - 1), axis=-1)
    logits = jnp.where((top_k > 0) & (logits < kth), -jnp.inf, logits)
    ordered = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(ordered, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each candidate
    cutoff = jnp.min(jnp.where(before < top_p, ordered, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1)


def bucket(n: int) -> int:
    """Prompt lengths are padded to powers of two (at least 8) so nearby lengths share one compile."""
    return max(8, 1 << (n - 1).bit_length())


def unrolled(cfg: ModelConfig, params: Any) -> tuple[ModelConfig, Any]:
    """The same model with its layers unrolled (`h_i` entries instead of a scanned `blocks` stack).

    Scan keeps compile time flat for training, but a scanned decode step threads the whole KV cache through the
    loop carry; unrolled, each layer updates its own cache in place — 2.3× faster per token for neo_125M on CPU.
    """
    if not cfg.scan_layers:
        return cfg, params
    period = cfg.scan_period()
    out = {k: v for k, v in params.items() if k != "blocks"}
    for i in range(cfg.n_layer):
        out[f"h_{i}"] = jax.tree.map(lambda a, r=i // period: a[r], params["blocks"][f"layer_{i % period}"])
    return dataclasses.replace(cfg, scan_layers=False), out


def generate(
    cfg: ModelConfig,
    params: Any,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    seed: int = 0,
    on_token: Callable[[int, int], None] | None = None,
) -> list[list[int]]:
    """Continue each prompt; returns the new tokens per prompt (an emitted `eos_id` ends a row and is not included).

    temperature 0 is greedy. `on_token(row, token)` is called for every emitted token as it is produced.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ConfigError("generate needs at least one non-empty prompt; pass token ids of the prompt text")
    if max_new_tokens < 0 or temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
        raise ConfigError("sampling needs max_new_tokens >= 0, temperature >= 0, top_k >= 0 and top_p in (0, 1]")
    flat = [t for p in prompts for t in p]
    if min(flat) < 0 or max(flat) >= cfg.n_vocab:
        raise ConfigError(f"prompt token ids must be in [0, {cfg.n_vocab}); the tokenizer does not match the model")
    longest = max(len(p) for p in prompts)
    if not cfg.rotary_emb and longest + max_new_tokens > cfg.n_ctx:
        raise ConfigError(
            f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceeds model.n_ctx ({cfg.n_ctx}); "
            "shorten the prompt or ask for fewer tokens"
        )
    if max_new_tokens == 0:
        return [[] for _ in prompts]

    cfg, params = unrolled(cfg, nn.meta.unbox(params))
    batch, width = len(prompts), bucket(longest)
    tokens = np.zeros((batch, width), np.int32)
    valid = np.zeros((batch, width), bool)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt) :] = prompt
        valid[row, width - len(prompt) :] = True
    positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32)

    forward = forward_fn(cfg)
    cache = init_cache(cfg, batch, bucket(width + max_new_tokens))  # bucketed: no recompile per max_new_tokens
    logits, cache = forward(params, tokens, positions, valid, cache, jnp.int32(0))
    next_pos = np.array([len(p) for p in prompts], np.int32)
    key = jax.random.PRNGKey(seed)
    knobs = (jnp.float32(temperature or 1.0), jnp.int32(top_k), jnp.float32(top_p))
    out: list[list[int]] = [[] for _ in prompts]
    done = np.zeros(batch, bool)
    for step in range(max_new_tokens):
        if temperature == 0:
            chosen = np.asarray(jnp.argmax(logits, axis=-1))
        else:
            chosen = np.asarray(sample_logits(logits, jax.random.fold_in(key, step), *knobs))
        for row in np.flatnonzero(~done):
            token = int(chosen[row])
            if eos_id is not None and token == eos_id:
                done[row] = True
                continue
            out[row].append(token)
            if on_token is not None:
                on_token(int(row), token)
        if done.all() or step == max_new_tokens - 1:
            break
        step_tokens = chosen.astype(np.int32)[:, None]
        ones = np.ones((batch, 1), bool)
        logits, cache = forward(params, step_tokens, next_pos[:, None], ones, cache, jnp.int32(width + step))
        next_pos = next_pos + 1  # never mutate an array jax may still be reading (zero-copy on CPU)
    return out

"""The decoder's device programs for continuous batching: a fixed number of slots share one batched KV cache.

`neo.model.decode.generate` decodes a batch that starts together: one cache index for every row. Here each slot is a
request of its own that joined between steps, so every row carries its own cache index, position and sampling knobs,
and one jitted step decodes all of them. A request is prefilled alone, exactly as `generate` prefills a single
prompt (left-padded to the power-of-two bucket of its length, cache index 0), and its entries are copied into its
slot's row of the shared cache, whose other entries are invalidated. Its decode steps then write at the same
indices `generate` uses (bucket + step), modulo the cache length, and sample with the same key
(`fold_in(PRNGKey(seed), index)`) on the same [1, vocab] row: the same logits give the same tokens, so a greedy (or
seeded) request reads what `neo sample` prints for its prompt.

Compiles: one decode step for the slot count per (sampling, logprobs) in use (an all-greedy batch skips the sorts, a
batch without logprobs the top-k), one prefill per
prompt bucket (8, 16, ... up to the context), never one per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from neo.model.attention import write_cache
from neo.model.config import ModelConfig
from neo.model.decode import _sample, greedy_choice, last_logits

TOP_LOGPROBS = 5  # OpenAI's completions API returns at most 5 alternatives per token


class Chosen(NamedTuple):
    """Per row: the token, its log-probability and the TOP_LOGPROBS most likely (ids, log-probabilities)."""

    token: jax.Array  # [rows] int32
    logprob: jax.Array  # [rows] float32
    top_ids: jax.Array  # [rows, TOP_LOGPROBS] int32
    top_logprobs: jax.Array  # [rows, TOP_LOGPROBS] float32


class Programs(NamedTuple):
    # (params, tokens, positions, valid, cache, slot, key, temperature, top_k, top_p, vocab, *, sampling, logprobs)
    prefill: Callable
    # (params, tokens, positions, cache, index, keys, temperature, top_k, top_p, vocab, *, sampling, logprobs)
    decode: Callable


def _choose(
    logits: jax.Array,
    index: jax.Array,
    keys: jax.Array,
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
    vocab: jax.Array,
    sampling: bool,
    logprobs: bool,
) -> Chosen:
    """Each row's next token as `generate` picks it for a batch of one: argmax when its temperature is 0, else
    `_sample` on that row alone with `fold_in(key, index)`."""
    logits = jnp.where(jnp.arange(logits.shape[-1]) < vocab, logits, -jnp.inf)  # ids the tokenizer has
    token = greedy_choice(logits)
    if sampling:

        def one(row: jax.Array, key: jax.Array, i: jax.Array, t: jax.Array, k: jax.Array, p: jax.Array) -> jax.Array:
            return _sample(row[None], jax.random.fold_in(key, i), jnp.where(t > 0, t, 1.0), k, p)[0]

        drawn = jax.vmap(one)(logits, keys, index, temperature, top_k, top_p)
        token = jnp.where(temperature > 0, drawn, token)
    token = token.astype(jnp.int32)
    if not logprobs:  # a top-k over the vocabulary costs as much as a small model's step on CPU: only when asked
        rows = token.shape[0]
        none = jnp.zeros((rows, TOP_LOGPROBS))
        return Chosen(token, jnp.zeros((rows,)), none.astype(jnp.int32), none)
    scores = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    top_logprobs, top_ids = lax.top_k(scores, TOP_LOGPROBS)
    chosen = jnp.take_along_axis(scores, token[:, None], axis=-1)[:, 0]
    return Chosen(token, chosen, top_ids.astype(jnp.int32), top_logprobs)


_PROGRAMS: dict[Any, Programs] = {}


def programs_for(cfg: ModelConfig, mesh: Any = None, rules: Any = None) -> Programs:
    """`build_programs(cfg)`, made once per (config, mesh, rules): engines of one model share their compiled programs
    (the model's logical constraints are resolved when traced, so each placement needs its own trace)."""
    key = (repr(cfg), mesh, rules)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = build_programs(cfg)
    return _PROGRAMS[key]


def build_programs(cfg: ModelConfig) -> Programs:
    """The jitted prefill and decode step for `cfg` (a decoding config: layers unrolled, see `for_decoding`)."""
    logits_and_entries = last_logits(cfg)

    def prefill_logits(
        params, tokens, positions, valid, cache, key, temperature, top_k, top_p, vocab, *, sampling, logprobs
    ):
        logits, entries = logits_and_entries(params, tokens, positions, valid, cache)
        zero = jnp.zeros((1,), jnp.int32)  # generate folds the prefill's token in at index 0
        chosen = _choose(
            logits[:1], zero, key[None], temperature[None], top_k[None], top_p[None], vocab, sampling, logprobs
        )
        return chosen, jax.tree.map(lambda e: e[:1], entries)  # row 0: dummy rows only pad a sharded batch

    def insert(cache, entries, slot):
        """The slot's row: every old entry invalidated, the prompt's entries written from index 0."""
        out = []
        for c, e in zip(cache, entries, strict=True):
            if not c:
                out.append(c)
                continue
            row = {n: lax.dynamic_slice_in_dim(a, slot, 1, axis=0) for n, a in c.items()}
            row["valid"] = jnp.zeros_like(row["valid"])
            row = write_cache(row, e, jnp.int32(0))
            out.append({n: lax.dynamic_update_slice_in_dim(c[n], row[n], slot, axis=0) for n in c})
        return out

    def decode_logits(
        params, tokens, positions, cache, index, keys, temperature, top_k, top_p, vocab, *, sampling, logprobs
    ):
        valid = jnp.ones(tokens.shape, bool)  # a free slot decodes too (its row is reset before it is used again)
        logits, entries = logits_and_entries(params, tokens, positions, valid, cache)
        return _choose(logits, index, keys, temperature, top_k, top_p, vocab, sampling, logprobs), entries

    def write_rows(cache, entries, index):
        """Each row's one new entry at its own index (modulo the cache's slots: a ring for local windows)."""
        out = []
        for c, e in zip(cache, entries, strict=True):
            if not c:
                out.append(c)
                continue
            rows = jnp.arange(index.shape[0])
            at = index % c["pos"].shape[-1]
            out.append(
                {
                    "k": c["k"].at[rows, :, at, :].set(e["k"][:, :, 0, :]),
                    "v": c["v"].at[rows, :, at, :].set(e["v"][:, :, 0, :]),
                    "pos": c["pos"].at[rows, at].set(e["pos"][:, 0]),
                    "valid": c["valid"].at[rows, at].set(e["valid"][:, 0]),
                }
            )
        return out

    prefill_jit = jax.jit(prefill_logits, static_argnames=("sampling", "logprobs"))
    decode_jit = jax.jit(decode_logits, static_argnames=("sampling", "logprobs"))
    insert_jit = jax.jit(insert, donate_argnums=0)  # in place: the update is the donated cache's only use
    write_jit = jax.jit(write_rows, donate_argnums=0)

    def prefill(
        params, tokens, positions, valid, cache, slot, key, temperature, top_k, top_p, vocab, *, sampling, logprobs
    ):
        chosen, entries = prefill_jit(
            params,
            tokens,
            positions,
            valid,
            cache,
            key,
            temperature,
            top_k,
            top_p,
            vocab,
            sampling=sampling,
            logprobs=logprobs,
        )
        return chosen, insert_jit(cache, entries, slot)

    def decode(params, tokens, positions, cache, index, keys, temperature, top_k, top_p, vocab, *, sampling, logprobs):
        chosen, entries = decode_jit(
            params,
            tokens,
            positions,
            cache,
            index,
            keys,
            temperature,
            top_k,
            top_p,
            vocab,
            sampling=sampling,
            logprobs=logprobs,
        )
        return chosen, write_jit(cache, entries, index)

    return Programs(prefill, decode)

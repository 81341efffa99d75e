"""Batched log-likelihood scoring on neo's forward pass: what lm-evaluation-harness asks of a language model.

A request is (context ids, continuation ids). As lm-eval's own backends do, the joined sequence keeps its last
n_ctx + 1 tokens (truncated from the left), the model reads all but the last, and the continuation's tokens are
scored: the sum of their log-probabilities (log-softmax in float32) and whether each is the argmax (`is_greedy`).

Requests are sorted by length, longest first, and cut into batches of a fixed number of rows; each batch is
right-padded (causal attention: padding never reaches a real token) to a bucketed width capped at n_ctx, and only
the continuation's positions (a power-of-two count) reach the vocabulary projection, so a whole task compiles once
per (width, count) bucket, never once per request. The sums and greedy flags are reduced on the device; only two
numbers per row come back. With a mesh and logical-axis rules (neo.parallel) the batch and the
model are split as the rules say, exactly as training lays them out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from neo.model.common import constrain
from neo.model.config import ModelConfig
from neo.model.decode import batch_multiple, bucket, padded_length
from neo.model.transformer import GPTNeo, output_embedding
from neo.parallel.layout import Rules
from neo.parallel.mesh import placement

Request = tuple[Sequence[int], Sequence[int]]  # (context ids, continuation ids)


def model_inputs(context: Sequence[int], continuation: Sequence[int], n_ctx: int) -> tuple[list[int], int]:
    """(tokens the model reads, how many of the last positions predict the continuation), lm-eval's convention."""
    whole = [*context, *continuation][-(n_ctx + 1) :]
    tokens = whole[:-1]
    return tokens, min(len(continuation), len(tokens))


def width_for(length: int, n_ctx: int) -> int:
    """The padded width of a batch whose longest row has `length` tokens, at most n_ctx (`padded_length`: a few
    compiles per task)."""
    return min(padded_length(max(length, 1)), n_ctx)


_SCORERS: dict[Any, Callable] = {}


def _scorer(cfg: ModelConfig, mesh: Mesh | None, rules: Rules | None) -> Callable:
    """jit(params, tokens, at, targets, scored) -> (summed log-prob [rows], all greedy [rows]), one per placement.

    tokens [rows, width]; `at` [rows, k] the positions whose predictions are scored (the continuation's), with their
    `targets` and `scored` mask: only those k positions go through the vocabulary projection and the log-softmax
    (a continuation is short; for GPT-Neo 125M the projection is a third of the forward pass).
    """
    key = (repr(cfg), mesh, rules)
    if key in _SCORERS:
        return _SCORERS[key]
    model = GPTNeo(cfg)

    def score(params: Any, tokens: jax.Array, at: jax.Array, targets: jax.Array, scored: jax.Array):
        hidden = model.apply({"params": params}, tokens, method=GPTNeo.features)  # [rows, width, embd], after ln_f
        hidden = jnp.take_along_axis(hidden, at[..., None], axis=1)  # [rows, k, embd]
        head = output_embedding(cfg, params)  # [vocab, embd]
        logits = jnp.einsum("bkd,vd->bkv", hidden.astype(head.dtype), head, preferred_element_type=jnp.float32)
        logits = constrain(logits, ("batch", "length", "vocab"))
        logp = jax.nn.log_softmax(logits, axis=-1)
        picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        total = jnp.sum(jnp.where(scored, picked, 0.0), axis=-1)
        greedy = jnp.all((jnp.argmax(logits, axis=-1) == targets) | ~scored, axis=-1)
        return total, greedy

    _SCORERS[key] = jax.jit(score)
    return _SCORERS[key]


def batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Request indices in batches of at most `batch_size`, longest first (similar lengths share a padded width)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def loglikelihoods(
    cfg: ModelConfig,
    params: Any,
    requests: Sequence[Request],
    *,
    batch_size: int = 16,
    mesh: Mesh | None = None,
    rules: Rules | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[tuple[float, bool]]:
    """(sum of the continuation's log-probabilities, whether every continuation token is the argmax) per request.

    `on_batch(n)` is called after each batch with the number of requests it held (progress).
    """
    if not requests:
        return []
    prepared = [model_inputs(ctx, cont, cfg.n_ctx) for ctx, cont in requests]
    rows = -(-batch_size // batch_multiple(mesh, rules)) * batch_multiple(mesh, rules)  # dummy rows fill a split
    score = _scorer(cfg, mesh, rules)
    totals = np.zeros(len(requests), np.float64)
    greedy = np.zeros(len(requests), bool)
    pending: list[tuple[list[int], Any]] = []

    def collect() -> None:
        indices, (t, g) = pending.pop()
        t, g = np.asarray(t), np.asarray(g)
        totals[indices], greedy[indices] = t[: len(indices)], g[: len(indices)]
        if on_batch is not None:
            on_batch(len(indices))

    with placement(mesh, rules):
        if mesh is not None:
            spec = nn.logical_to_mesh_sharding(PartitionSpec("batch", None), mesh, rules or ())
        for indices in batches([len(prepared[i][0]) for i in range(len(prepared))], rows):
            width = width_for(len(prepared[indices[0]][0]), cfg.n_ctx)
            k = min(bucket(max(prepared[i][1] for i in indices)), width)
            tokens = np.zeros((rows, width), np.int32)
            at = np.zeros((rows, k), np.int32)
            targets = np.zeros((rows, k), np.int32)
            scored = np.zeros((rows, k), bool)
            for row, i in enumerate(indices):
                (inp, n), (_, cont) = prepared[i], requests[i]
                tokens[row, : len(inp)] = inp
                at[row, :n] = np.arange(len(inp) - n, len(inp))
                targets[row, :n] = list(cont)[len(cont) - n :]
                scored[row, :n] = True
            arrays = (tokens, at, targets, scored)
            if mesh is not None:
                arrays = tuple(jax.device_put(a, spec) for a in arrays)
            result = score(params, *arrays)  # dispatched: the previous batch is read while this one runs
            if pending:
                collect()
            pending.append((indices, result))
        collect()
    return [(float(t), bool(g)) for t, g in zip(totals, greedy, strict=True)]

"""Parameter bookkeeping without allocation: counts, abstract shapes, and per-layer views of the scanned stack.

Scanned params hold layer i = r * period + j at `blocks/layer_{j}/...[r]`; unrolled params at `h_{i}/...`. The
per-layer views let converters (Hugging Face, mesh-tensorflow) think in plain layer indices either way.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from neo.model.config import ModelConfig
from neo.model.transformer import GPTNeo

Params = dict[str, Any]


def init_variables(cfg: ModelConfig, key: jax.Array, length: int | None = None) -> Any:
    """`GPTNeo(cfg).init` (boxed variables) on a dummy row of `length` tokens, by default min(n_ctx, 8): the
    parameters' shapes do not depend on it, the cost of tracing the forward pass does."""
    tokens = jnp.zeros((1, length or min(cfg.n_ctx, 8)), jnp.int32)
    return GPTNeo(cfg).init({"params": key}, tokens)


_ABSTRACT: dict[tuple[str, int | None], Any] = {}


def abstract_variables(cfg: ModelConfig, length: int | None = None) -> Any:
    """`init_variables` as ShapeDtypeStructs (nothing allocated).

    Remembered per config: tracing a model's init takes seconds for a large model, and loading, sharding and
    re-laying-out parameters all ask for it. The tree is immutable, so callers may share it.
    """
    key = (repr(cfg), length)
    if key not in _ABSTRACT:
        _ABSTRACT[key] = jax.eval_shape(lambda: init_variables(cfg, jax.random.PRNGKey(0), length))
    return _ABSTRACT[key]


def count_params(cfg: ModelConfig) -> int:
    """Exact parameter count, from abstract shapes only (works for 1T-parameter configs on a laptop)."""
    params = nn.meta.unbox(abstract_variables(cfg)["params"])
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def init_params(cfg: ModelConfig, seed: int = 0) -> Params:
    """Plain (unboxed) parameters, e.g. for tests and sampling."""
    return nn.meta.unbox(init_variables(cfg, jax.random.PRNGKey(seed))["params"])


def layer_params(cfg: ModelConfig, params: Params) -> list[Params]:
    """Per-layer parameter dicts (numpy views) in layer order, from scanned or unrolled params."""
    if not cfg.scan_layers:
        return [params[f"h_{i}"] for i in range(cfg.n_layer)]
    period = cfg.scan_period()
    blocks = params["blocks"]
    return [
        jax.tree.map(lambda a, r=i // period: np.asarray(a)[r], blocks[f"layer_{i % period}"])
        for i in range(cfg.n_layer)
    ]


def stack_layer_params(cfg: ModelConfig, layers: list[Params]) -> Params:
    """The inverse of `layer_params`: the `blocks` (scanned) or `h_i` (unrolled) entries of a params dict."""
    if not cfg.scan_layers:
        return {f"h_{i}": layer for i, layer in enumerate(layers)}
    period = cfg.scan_period()
    return {"blocks": {f"layer_{j}": jax.tree.map(lambda *xs: np.stack(xs), *layers[j::period]) for j in range(period)}}

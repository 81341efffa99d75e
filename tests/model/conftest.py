"""Small configs shared by the model tests."""

from __future__ import annotations

from typing import Any

from neo.model.config import ModelConfig


def small(**changes: Any) -> ModelConfig:
    """A 4-layer global/local model small enough to compile in about a second."""
    base: dict[str, Any] = dict(
        n_vocab=53, n_ctx=32, n_embd=32, n_head=4, n_layer=4, attention_types=[[["global", "local"], 2]], window_size=3
    )
    base.update(changes)
    cfg = ModelConfig(**base)
    cfg.validate()
    return cfg


_PARAMS: dict[str, Any] = {}
_APPLY: dict[str, Any] = {}


def params_for(cfg: ModelConfig, seed: int = 0) -> Any:
    """Initialised params, shared between tests (init compiles for seconds on 2 CPU cores)."""
    from neo.model.params import init_params

    key = f"{cfg!r}/{seed}"
    if key not in _PARAMS:
        _PARAMS[key] = init_params(cfg, seed)
    return _PARAMS[key]


def logits_fn(cfg: ModelConfig) -> Any:
    """A jitted deterministic forward (tokens -> logits) per config."""
    import jax

    from neo.model.transformer import GPTNeo

    key = repr(cfg)
    if key not in _APPLY:
        model = GPTNeo(cfg)
        _APPLY[key] = jax.jit(lambda params, tokens: model.apply({"params": params}, tokens))
    return _APPLY[key]

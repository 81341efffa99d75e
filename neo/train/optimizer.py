"""GPT-Neo's optimizer semantics in optax: warmup then cosine/linear decay to 0.1·lr, for Adam and Adafactor alike."""

from __future__ import annotations

from typing import Any

import jax
import optax

from neo.config import OptimizerConfig

# Parameter leaves that never get weight decay: biases and normalisation gains (GPT-Neo excluded "norm" and "bias").
_NO_DECAY_LEAVES = {"bias", "b", "scale", "g", "gain"}


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup to `lr`, then cosine or linear decay to `end_lr_ratio * lr` at `lr_decay_end`, then flat."""
    decay_end = cfg.lr_decay_end or total_steps
    warmup = min(cfg.warmup_steps, decay_end)
    end = cfg.lr * cfg.end_lr_ratio
    decay_steps = max(decay_end - warmup, 1)
    if cfg.lr_decay == "cosine":
        decay = optax.cosine_decay_schedule(cfg.lr, decay_steps, alpha=cfg.end_lr_ratio)
    else:
        decay = optax.linear_schedule(cfg.lr, end, decay_steps)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), decay], boundaries=[warmup])


def decay_mask(params: Any) -> Any:
    """True where weight decay applies: every leaf except biases and norm gains."""

    def keep(path: tuple, _: Any) -> bool:
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        if names and (names[-1] in _NO_DECAY_LEAVES or names[-1].endswith("_bias")):
            return False
        return not any("norm" in n.lower() or n.startswith("ln_") for n in names)

    return jax.tree_util.tree_map_with_path(keep, params)


def build_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """The full update rule: clipping, then Adam(W) or Adafactor driven by the same schedule."""
    schedule = learning_rate_schedule(cfg, total_steps)
    parts: list[optax.GradientTransformation] = []
    if cfg.gradient_clipping > 0:
        parts.append(optax.clip_by_global_norm(cfg.gradient_clipping))
    if cfg.name == "adam":
        parts.append(
            optax.adamw(
                schedule,
                b1=cfg.beta1,
                b2=cfg.beta2,
                eps=cfg.epsilon,
                weight_decay=cfg.weight_decay,
                mask=decay_mask,
            )
        )
    else:
        parts.append(
            optax.adafactor(
                learning_rate=schedule,
                momentum=cfg.beta1 or None,
                eps=cfg.adafactor_epsilon1,
                weight_decay_rate=cfg.weight_decay or None,
                weight_decay_mask=decay_mask,
            )
        )
    return optax.chain(*parts)

"""The training objective: weighted cross-entropy in float32.

Next-token LM uses it unweighted; with `mlm_training` the weights select the masked positions (the masking itself is
a data-pipeline stage, `neo.data.pipeline.mask_tokens`). z-loss and MoE losses are sown by the model itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Weighted mean next-token (or masked-token) cross-entropy in float32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    if weights is None:
        return nll.mean()
    weights = weights.astype(jnp.float32)
    return (nll * weights).sum() / jnp.maximum(weights.sum(), 1.0)

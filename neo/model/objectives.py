"""The training objective: weighted cross-entropy in float32, plus the z-loss.

Next-token LM uses it unweighted; with `mlm_training` the weights select the masked positions (the masking itself is
a data-pipeline stage, `neo.data.pipeline.mask_tokens`). MoE balance losses are sown by the model itself.

The trainer uses `lm_head_loss`, which fuses the vocab projection with the loss: its forward pass also forms the
gradients of the hidden states and of the output embedding, so the [tokens, vocab] logits are walked once and never
kept for the backward pass (nor transposed for the weight gradient) — on CPU the head's backward is ~30% faster, and
`chunks > 1` bounds the logits' memory for large vocabularies.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from neo.model import cpu_matvec


def _picked(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """logits[..., target] by a one-hot compare: it fuses into the softmax's elementwise pass, where a gather's
    gradient would be a scatter (slow on CPU, and a collective when the vocab is sharded)."""
    vocab = jnp.arange(logits.shape[-1], dtype=targets.dtype)
    return jnp.sum(jnp.where(targets[..., None] == vocab, logits, 0.0), axis=-1)


def _target_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """logits[..., target] by a gather, for `lm_head_loss`, whose gradient never differentiates it: XLA CPU cannot
    fuse the one-hot compare into its reduction and writes a [tokens, vocab] select first."""
    return jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]


def z_loss(lse: jax.Array, coef: float) -> jax.Array:
    """PaLM's z-loss: coef · mean(logsumexp(logits)²), which keeps the softmax normaliser near 1."""
    return coef * jnp.mean(jnp.square(lse))


def cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Weighted mean next-token (or masked-token) cross-entropy in float32."""
    logits = logits.astype(jnp.float32)
    nll = jax.nn.logsumexp(logits, axis=-1) - _picked(logits, targets)
    if weights is None:
        return nll.mean()
    weights = weights.astype(jnp.float32)
    return (nll * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def lm_head_loss(
    x: jax.Array,
    head: jax.Array,
    targets: jax.Array,
    weights: jax.Array | None = None,
    *,
    z_coef: float = 0.0,
    chunks: int = 1,
    cpu_matmuls: bool = False,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """(ce + z-loss, (ce, z-loss)) of hidden states x [batch, length, embd] under the output embedding [vocab, embd].

    Equals `cross_entropy(x @ head.T, targets, weights) + z_loss(...)` in value and gradient. The pair of parts is a
    metric: gradients flow through the first output only. `chunks` splits the sequence (it must divide the length).
    `cpu_matmuls` forms the head gradient in the operand order XLA CPU runs fastest (1.35x faster there).
    """
    if x.shape[1] % chunks:
        raise ValueError(f"lm_head_loss: chunks={chunks} does not divide the sequence length {x.shape[1]}")
    weights = jnp.ones(targets.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
    total, parts = _fused_loss(x, head, targets, weights, z_coef, chunks, cpu_matmuls)
    return total, jax.lax.stop_gradient(parts)


CHUNK_LOGITS_BYTES = 16 << 20  # float32 logits per chunk that `auto_loss_chunks` aims at


def auto_loss_chunks(rows: int, length: int, vocab: int) -> int:
    """The fewest sequence chunks (a divisor of `length`) whose float32 logits, for `rows` sequences on a device,
    fit in `CHUNK_LOGITS_BYTES`; the trainer's default on CPU devices.

    On this project's 2-core CPU (Zen 4, 32 MiB L3) the benchmark model's 64 MiB of logits in 4 chunks of 16 MiB
    made the whole train step 3.2% and 5.2% faster than one pass (two runs of 20 paired steps in one process,
    `benchmarks/train_ab.py`; faster in 18 of 20 both times).
    """
    for chunks in range(1, length + 1):
        if length % chunks == 0 and rows * (length // chunks) * vocab * 4 <= CHUNK_LOGITS_BYTES:
            return chunks
    return length


def _chunked(a: jax.Array, chunks: int) -> jax.Array:
    """[batch, length, ...] -> [chunks, batch, length / chunks, ...]: split the sequence, keep the batch sharding."""
    return a.reshape(a.shape[0], chunks, a.shape[1] // chunks, *a.shape[2:]).swapaxes(0, 1)


def _unchunked(a: jax.Array) -> jax.Array:
    a = a.swapaxes(0, 1)
    return a.reshape(a.shape[0], a.shape[1] * a.shape[2], *a.shape[3:])


def _pass(x, head, targets, weights, z_coef, chunks, cpu_matmuls, *, with_grads: bool):
    """Loss sums over sequence chunks, and with `with_grads` the gradients of (ce + z-loss) for x and head."""
    denom = jnp.maximum(weights.sum(), 1.0)
    n_tokens = targets.size

    # bfloat16 on a CPU: XLA CPU's fast bf16 product takes row-major operands only, so the head's transposes are
    # made by neo's kernel, which XLA cannot fold into the dots (`neo.model.kernels.cpu`)
    bf16_rows = cpu_matmuls and x.dtype == jnp.bfloat16 and cpu_matvec.transposes(head)
    head_t = cpu_matvec.transposed(head) if bf16_rows else None

    def body(carry, xs):
        ce_sum, z_sum, d_head = carry
        xc, tc, wc = xs
        if bf16_rows:
            logits = jnp.dot(xc, head_t, preferred_element_type=jnp.float32)
        else:
            logits = jnp.einsum("bld,vd->blv", xc, head, preferred_element_type=jnp.float32)
        lse = jax.nn.logsumexp(logits, axis=-1)
        ce_sum += jnp.sum(wc * (lse - _target_logits(logits, tc)))
        z_sum += jnp.sum(jnp.square(lse))
        if not with_grads:
            return (ce_sum, z_sum, d_head), None
        probs = jnp.exp(logits - lse[..., None])
        onehot = tc[..., None] == jnp.arange(logits.shape[-1], dtype=tc.dtype)
        d_logits = (wc / denom)[..., None] * (probs - onehot) + (2 * z_coef / n_tokens * lse)[..., None] * probs
        d_logits = d_logits.astype(x.dtype)
        dx = jnp.einsum("blv,vd->bld", d_logits, head, preferred_element_type=jnp.float32).astype(x.dtype)
        # accumulated as [embd, vocab] (transposed once at the end): contracting over tokens then needs no
        # transposed copy of the big d_logits, only of the small hidden chunk
        if cpu_matmuls:  # XLA would fold the transposes into the dot and read both operands across their rows
            x2 = xc.reshape(-1, xc.shape[-1])
            x_t = cpu_matvec.transposed(x2) if bf16_rows else jax.lax.optimization_barrier(x2.T)
            d_logits2 = d_logits.reshape(-1, d_logits.shape[-1])
            d_head += jnp.einsum("dn,nv->dv", x_t, d_logits2, preferred_element_type=jnp.float32)
        else:
            d_head += jnp.einsum("bld,blv->dv", xc, d_logits, preferred_element_type=jnp.float32)
        return (ce_sum, z_sum, d_head), dx

    zero = jnp.zeros((), jnp.float32)
    d_head0 = jnp.zeros(head.shape[::-1], jnp.float32) if with_grads else zero
    xs = (_chunked(x, chunks), _chunked(targets, chunks), _chunked(weights, chunks))
    if chunks == 1:
        (ce_sum, z_sum, d_head), dx = body((zero, zero, d_head0), jax.tree.map(lambda a: a[0], xs))
    else:
        (ce_sum, z_sum, d_head), dx = jax.lax.scan(body, (zero, zero, d_head0), xs)
        dx = None if dx is None else _unchunked(dx)
    ce, z = ce_sum / denom, z_coef * z_sum / n_tokens
    if with_grads:
        d_head = (jax.lax.optimization_barrier(d_head) if cpu_matmuls else d_head).T
    return (ce + z, (ce, z)), (dx, d_head)


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _fused_loss(x, head, targets, weights, z_coef, chunks, cpu_matmuls):
    return _pass(x, head, targets, weights, z_coef, chunks, cpu_matmuls, with_grads=False)[0]


def _fused_fwd(x, head, targets, weights, z_coef, chunks, cpu_matmuls):
    out, (dx, d_head) = _pass(x, head, targets, weights, z_coef, chunks, cpu_matmuls, with_grads=True)
    return out, (dx, d_head.astype(head.dtype))


def _fused_bwd(z_coef, chunks, cpu_matmuls, residuals, cotangents):
    dx, d_head = residuals
    g = cotangents[0]  # the parts are stop_gradient'ed by lm_head_loss
    return (dx * g.astype(dx.dtype), d_head * g.astype(d_head.dtype), None, None)


_fused_loss.defvjp(_fused_fwd, _fused_bwd)

"""The CPU kernels: matmuls whose backward pass takes XLA CPU's fast operand orders, and causal softmax attention
over in-order rows with a hand-written backward pass (CPU training). Other masks use the xla forms.

Float32 attention runs in neo's own kernel where it is built (`fused_attention`, `neo/model/cpu_attention.cc`):
XLA CPU runs attention's per-head products of small matrices at ~80 GFLOP/s, and with the softmax between them
attention took ~19% of the benchmark model's float32 step; the kernel keeps each head's scores in cache from
product to softmax to product (the step −16%, benchmarks/README.md). Where it is not built, or the head size is
not a multiple of 16, `causal_attention` forms the same in XLA's products in query blocks.

In bfloat16 (`model.precision=bfloat16`) the products take XLA CPU's fast bf16 path (YNNPACK; AMX tiles where the
CPU has them), which accepts only bf16 x bf16 -> float32 products of row-major operands: any other form (a bf16
result, an operand read transposed) is widened to float32 first, and ran slower than float32 itself. So every
product here accumulates in float32 and is rounded after, the backward pass's transposed operands are made by neo's
own kernel (`neo.model.cpu_matvec.transposed`; XLA folds its own transposes back into the dot), and a bias gradient
is a product with rows of ones (`add_bias`). Attention over bf16 rows is `bf16_attention`: the whole causal square in
bf16 products, its operands laid out by the same kernel (measurements: benchmarks/README.md).

Training rows hold positions 0..length-1, all valid, so the mask is the same for every row and known when the step
is traced: query block i of n can see only keys before its end (and, in a local layer, none before its window).
Each block's products shrink to those keys: the scores, softmax and both products cost (n + 1) / 2n of the full
square.

The backward pass is written out (`jax.custom_vjp`) rather than derived: every product reads [batch, heads, rows,
kv] operands in place, the softmax gradient reuses the saved probabilities, and each key block's gradients
accumulate from the query blocks that see it. On this project's 2-core CPU the benchmark model's train step
(`benchmarks/train.py`) ran 4.3–4.4% faster than with `jax.nn.dot_product_attention` in 8 blocks and XLA's
derived backward (two runs of 20 paired steps, `benchmarks/train_ab.py --a-attention xla`; faster in 19 and 18).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from neo.model import cpu_matvec
from neo.model.kernels import xla
from neo.model.kernels.xla import Spans, query_blocks, query_spans

CPU_MATMULS = True  # the fused head loss forms its gradient in XLA CPU's fast order too (1.35x faster there)
BLOCK_ROWS = 64  # query rows per block of the CPU attention at least


def dense(x: jax.Array, w: jax.Array, spec: str) -> jax.Array:
    """`einsum(spec, x, w)` as one 2D `cpu_matmul`: x's trailing dims contract with w's leading ones."""
    xs, ws = spec.split("->")[0].split(",")
    n_in = len(set(xs) & set(ws))
    lead, outs = x.shape[: x.ndim - n_in], w.shape[n_in:]
    y = cpu_matmul(x.reshape(math.prod(lead), -1), w.reshape(-1, math.prod(outs)))
    return y.reshape(*lead, *outs)


@jax.custom_vjp
def cpu_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """x [rows, in] @ w [in, out], whose backward pass forms its products the way XLA CPU runs them fastest.

    Left to itself, XLA CPU folds the transposes of the weight gradient x.T @ dy into the dot and often transposes
    dy for another consumer, and its dot then reads one or both operands across their rows: 1.4-1.8x slower than
    row-major operands for the MLP shapes of a small model. Here the transpose of the smaller operand is made
    explicitly behind an optimisation barrier, and the product is formed with its wider dimension last (XLA CPU's
    faster orientation). Same values as `x @ w` and its autodiff gradients.
    """
    return _product(x, w)


def _cpu_matmul_fwd(x: jax.Array, w: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return _product(x, w), (x, w)


def _product(a: jax.Array, b: jax.Array) -> jax.Array:
    """a @ b; for bfloat16 operands with float32 accumulation, the form XLA CPU runs on its fast bf16 path."""
    if a.dtype == b.dtype == jnp.bfloat16:
        return jnp.dot(a, b, preferred_element_type=jnp.float32).astype(a.dtype)
    return a @ b


def _cpu_matmul_bwd(res: tuple[jax.Array, jax.Array], dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, w = res
    if cpu_matvec.transposes(x) and cpu_matvec.transposes(w):
        dy = dy.astype(x.dtype)
        return _product(dy, cpu_matvec.transposed(w)), _product(cpu_matvec.transposed(x), dy)
    barrier = jax.lax.optimization_barrier
    dx = jnp.einsum("no,io->ni", dy, w)  # dy @ w.T: XLA CPU reads a transposed weight at full rate
    if w.shape[1] < w.shape[0]:  # ([out, rows] @ [rows, in]).T: the wider dimension last
        return dx, barrier(barrier(dy.T) @ x).T
    return dx, barrier(x.T) @ dy  # [in, rows] @ [rows, out]


cpu_matmul.defvjp(_cpu_matmul_fwd, _cpu_matmul_bwd)


def add_bias(y: jax.Array, b: jax.Array) -> jax.Array:
    """y + b over y's last axis. In bfloat16 the bias gradient, a column sum of dy, is formed as a product with rows
    of ones on XLA CPU's fast bf16 path (`_bf16_add_bias`): XLA's own reduction of a bf16 [2048, 1536] gradient took
    ~12 ms, a tenth of the whole MLP's products."""
    return _bf16_add_bias(y, b) if y.dtype == b.dtype == jnp.bfloat16 else y + b


@jax.custom_vjp
def _bf16_add_bias(y: jax.Array, b: jax.Array) -> jax.Array:
    return y + b


def _bf16_add_bias_fwd(y: jax.Array, b: jax.Array) -> tuple[jax.Array, None]:
    return y + b, None


def _bf16_add_bias_bwd(_: None, dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    ones = jnp.ones((8, math.prod(dy.shape[:-1])), dy.dtype)  # 8 rows: XLA CPU's fast product takes no single row
    db = jnp.dot(ones, dy.reshape(ones.shape[1], -1), preferred_element_type=jnp.float32)[0]
    return dy, db.astype(dy.dtype)


_bf16_add_bias.defvjp(_bf16_add_bias_fwd, _bf16_add_bias_bwd)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    window: int | None,
    in_order: bool,
    dropout: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """In-order causal training rows: `bf16_attention` for bfloat16 operands and `fused_attention` for float32 ones
    where neo's kernels run, else `causal_attention` in blocks of at least 64 rows; anything else: xla's."""
    if in_order and dropout is None:
        if q.dtype == k.dtype == v.dtype == jnp.bfloat16 and cpu_matvec.transposes(q):
            return bf16_attention(q, k, v, window)
        if cpu_matvec.attends(q, k, v):
            return fused_attention(q, k, v, window)
        return causal_attention(q, k, v, query_blocks(q.shape[1], min_rows=BLOCK_ROWS), window)
    return xla.attention(q, k, v, mask, window, in_order, dropout)


def _block_mask(start: int, end: int, first: int, window: int | None) -> np.ndarray:
    """[end - start, end - first] bool: causal, and within `window` of the query when local."""
    q = np.arange(start, end)[:, None]
    k = np.arange(first, end)[None, :]
    mask = k <= q
    return mask if window is None else mask & (q - k < window)


def _masked(scores: jax.Array, mask: np.ndarray) -> jax.Array:
    """`scores` where `mask` [q, k] holds, else -inf. The mask is added as a [q, k] bias that joins the scores through
    an optimization barrier: a mask that depends on nothing in the layer loop is hoisted out of it, and there
    broadcast to the scores' whole [batch, heads, q, k] shape, an array written each step and read by every layer."""
    bias = np.where(mask, 0.0, -np.inf).astype(scores.dtype)
    scores, bias = jax.lax.optimization_barrier((scores, bias))
    return scores + bias


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, blocks: int, window: int | None = None) -> jax.Array:
    """softmax(q · kᵀ + mask) · v without scaling, for q, k, v [batch, length, heads, kv]; float32 throughout."""
    heads_first = (0, 2, 1, 3)
    spans = query_spans(q.shape[1], blocks, window)
    out = _attend(*(t.astype(jnp.float32).transpose(heads_first) for t in (q, k, v)), spans, window)
    return out.transpose(heads_first)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _attend(q: jax.Array, k: jax.Array, v: jax.Array, spans: Spans, window: int | None) -> jax.Array:
    return _forward(q, k, v, spans, window)[0]


def _forward(
    q: jax.Array, k: jax.Array, v: jax.Array, spans: Spans, window: int | None
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    outs, probs = [], []
    for start, end, first in spans:
        scores = jnp.einsum("bhqd,bhkd->bhqk", q[:, :, start:end], k[:, :, first:end])
        scores = _masked(scores, _block_mask(start, end, first, window))
        p = jnp.exp(scores - scores.max(axis=-1, keepdims=True))  # the backward below is the softmax's
        p = p / p.sum(axis=-1, keepdims=True)
        probs.append(p)
        outs.append(jnp.einsum("bhqk,bhkd->bhqd", p, v[:, :, first:end]))
    out = jnp.concatenate(outs, axis=2)
    return out, (q, k, v, out, *probs)


def _backward(spans: Spans, window: int | None, res: tuple[jax.Array, ...], d_out: jax.Array) -> tuple[jax.Array, ...]:
    q, k, v, out, *probs = res
    delta = jnp.sum(d_out * out, axis=-1, keepdims=True)  # rowsum(dP * P) without forming dP * P
    dq, dk, dv = [], jnp.zeros_like(k), jnp.zeros_like(v)
    for (start, end, first), p in zip(spans, probs, strict=True):
        d_o = d_out[:, :, start:end]
        dp = jnp.einsum("bhqd,bhkd->bhqk", d_o, v[:, :, first:end])
        ds = p * (dp - delta[:, :, start:end])
        dq.append(jnp.einsum("bhqk,bhkd->bhqd", ds, k[:, :, first:end]))
        dk = dk.at[:, :, first:end].add(jnp.einsum("bhqk,bhqd->bhkd", ds, q[:, :, start:end]))
        dv = dv.at[:, :, first:end].add(jnp.einsum("bhqk,bhqd->bhkd", p, d_o))
    return jnp.concatenate(dq, axis=2), dk, dv


_attend.defvjp(_forward, _backward)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, window: int | None = None) -> jax.Array:
    """softmax(q · kᵀ + mask) · v without scaling, causal (and within `window` when local), for float32 q, k, v
    [batch, length, heads, kv], in neo's kernel (`neo.model.cpu_matvec.attention`): each head's scores stay in cache
    from product to softmax to product, and the backward pass recomputes the probabilities from each row's saved
    log-sum-exp (flash attention's scheme). Forward and backward of the benchmark model's layer: ~10 ms against
    ~31 ms for `causal_attention` in 4 blocks (benchmarks/README.md)."""
    return cpu_matvec.attention(q, k, v, window)[0]


def _fused_forward(q: jax.Array, k: jax.Array, v: jax.Array, window: int | None) -> tuple[jax.Array, tuple]:
    out, lse = cpu_matvec.attention(q, k, v, window)
    return out, (q, k, v, out, lse)


def _fused_backward(window: int | None, res: tuple, d_out: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    return cpu_matvec.attention_grad(*res, d_out, window)


fused_attention.defvjp(_fused_forward, _fused_backward)


def _heads_first(t: jax.Array) -> jax.Array:
    """[b, l, h, d] -> [b, h, l, d] by neo's kernel (XLA would fold its own transpose into the product)."""
    b, length, h, d = t.shape
    return cpu_matvec.swapped(t, b, length, h, d).reshape(b, h, length, d)


def _heads_first_t(t: jax.Array) -> jax.Array:
    """[b, l, h, d] -> [b, h, d, l]."""
    b, length, h, d = t.shape
    return cpu_matvec.swapped(t, b, length, h * d, 1).reshape(b, h, d, length)


def _rows_first(t: jax.Array) -> jax.Array:
    """[b, h, l, d] -> [b, l, h, d]."""
    b, h, length, d = t.shape
    return cpu_matvec.swapped(t, b, h, length, d).reshape(b, length, h, d)


def _rows_first_t(t: jax.Array) -> jax.Array:
    """[b, h, d, l] -> [b, l, h, d]."""
    b, h, d, length = t.shape
    return cpu_matvec.swapped(t, b, h * d, length, 1).reshape(b, length, h, d)


def _bf16(t: jax.Array) -> jax.Array:
    return t.astype(jnp.bfloat16)


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
    """Batched a @ b of bf16 operands [..., m, k] x [..., k, n], accumulated in float32 (XLA CPU's fast form)."""
    return jnp.matmul(a, b, preferred_element_type=jnp.float32)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def bf16_attention(q: jax.Array, k: jax.Array, v: jax.Array, window: int | None = None) -> jax.Array:
    """softmax(q · kᵀ + mask) · v without scaling, causal (and within `window` when local), for bfloat16 q, k, v
    [batch, length, heads, kv]: bf16 [batch, length, heads, kv].

    The whole causal square in one product each way, every product in XLA CPU's fast bf16 form: operands row-major,
    heads first and, where a product contracts over rows, transposed by neo's kernel; the backward pass forms dkᵀ =
    qᵀ · dS and dvᵀ = dOᵀ · P so that no [length, length] matrix is ever transposed. Scores and the softmax are
    float32; P and dS are rounded to bf16 for their products (as flash attention does).
    """
    return _bf16_forward(q, k, v, window)[0]


def _bf16_forward(q: jax.Array, k: jax.Array, v: jax.Array, window: int | None) -> tuple[jax.Array, tuple]:
    length = q.shape[1]
    scores = _mm(_heads_first(q), _heads_first_t(k))
    scores = _masked(scores, _block_mask(0, length, 0, window))
    p = _bf16(jax.nn.softmax(scores, axis=-1))
    out = _bf16(_mm(p, _heads_first(v)))
    return _rows_first(out), (_heads_first_t(q), _heads_first(k), _heads_first_t(v), p, out)


def _bf16_backward(window: int | None, res: tuple, d_out: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    q_t, k_h, v_t, p, out = res
    d_out = _bf16(d_out)
    d_o = _heads_first(d_out)
    delta = jnp.sum(d_o.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    ds = _bf16(p.astype(jnp.float32) * (_mm(d_o, v_t) - delta))
    dq = _rows_first(_bf16(_mm(ds, k_h)))
    dk = _rows_first_t(_bf16(_mm(q_t, ds)))
    dv = _rows_first_t(_bf16(_mm(_heads_first_t(d_out), p)))
    return dq, dk, dv


bf16_attention.defvjp(_bf16_forward, _bf16_backward)

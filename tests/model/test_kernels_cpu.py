"""The CPU training kernels: attention (query blocks, written-out backward; neo's fused float32 kernel) against the
masked full square, and the bfloat16 products (neo's transpose kernel, bias gradients as products) against float32
arithmetic."""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neo.model import cpu_matvec
from neo.model.kernels.cpu import (
    add_bias,
    attention,
    bf16_attention,
    causal_attention,
    cpu_matmul,
    fused_attention,
    query_spans,
)

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++")


def _reference(q: jax.Array, k: jax.Array, v: jax.Array, window: int | None) -> jax.Array:
    length = q.shape[1]
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    mask = (j <= i) if window is None else (j <= i) & (i - j < window)
    return jax.nn.dot_product_attention(q, k, v, mask=jnp.asarray(mask)[None, None], scale=1.0)


@pytest.mark.parametrize(
    ("length", "blocks", "window"), [(256, 4, None), (96, 2, None), (96, 3, 40), (64, 4, 3), (64, 1, 7)]
)
def test_values_and_gradients_equal_the_full_square(length: int, blocks: int, window: int | None) -> None:
    rng = np.random.default_rng(0)
    q, k, v, d_out = (jnp.asarray(rng.standard_normal((2, length, 3, 16), dtype=np.float32)) for _ in range(4))

    def loss(f):
        return lambda q, k, v: jnp.vdot(f(q, k, v), d_out)

    got, want = causal_attention(q, k, v, blocks, window), _reference(q, k, v, window)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    g_got = jax.jit(jax.grad(loss(lambda *a: causal_attention(*a, blocks, window)), argnums=(0, 1, 2)))(q, k, v)
    g_want = jax.grad(loss(lambda *a: _reference(*a, window)), argnums=(0, 1, 2))(q, k, v)
    for name, a, b in zip("qkv", g_got, g_want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5, err_msg=name)


@needs_compiler
@pytest.mark.parametrize(
    ("batch", "length", "heads", "d", "window"),
    [(2, 256, 3, 64, None), (1, 100, 2, 32, 17), (2, 5, 1, 16, None), (1, 70, 2, 16, 3), (1, 130, 1, 16, 200)],
)
def test_fused_float32_attention_matches_the_full_square(
    batch: int, length: int, heads: int, d: int, window: int | None
) -> None:
    """neo's kernel (scores kept per head, probabilities recomputed from log-sum-exps in the backward pass): values
    and gradients of the masked full square, at lengths that are not whole vectors or blocks, local or not."""
    rng = np.random.default_rng(3)
    q, k, v, d_out = (jnp.asarray(rng.standard_normal((batch, length, heads, d), dtype=np.float32)) for _ in range(4))
    assert cpu_matvec.attends(q, k, v)
    got = jax.jit(lambda *a: fused_attention(*a, window))(q, k, v)
    np.testing.assert_allclose(np.asarray(got), np.asarray(_reference(q, k, v, window)), rtol=1e-5, atol=1e-5)

    def loss(f):
        return lambda q, k, v: jnp.vdot(f(q, k, v), d_out)

    g_got = jax.jit(jax.grad(loss(lambda *a: fused_attention(*a, window)), argnums=(0, 1, 2)))(q, k, v)
    g_want = jax.grad(loss(lambda *a: _reference(*a, window)), argnums=(0, 1, 2))(q, k, v)
    for name, a, b in zip("qkv", g_got, g_want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4, err_msg=name)


@needs_compiler
def test_float32_rows_take_the_fused_kernel_where_it_fits() -> None:
    def targets(d: int) -> str:
        q = jnp.zeros((1, 32, 2, d), jnp.float32)
        return jax.jit(lambda q: attention(q, q, q, None, None, True)).lower(q).as_text()

    assert "neo_attention_f32" in targets(16)
    assert "neo_attention_f32" not in targets(8)  # head size not a multiple of 16: the query blocks


def test_spans_skip_keys_outside_the_window() -> None:
    assert query_spans(256, 4, None) == ((0, 64, 0), (64, 128, 0), (128, 192, 0), (192, 256, 0))
    assert query_spans(256, 4, 40) == ((0, 64, 0), (64, 128, 25), (128, 192, 89), (192, 256, 153))


def test_bfloat16_inputs_attend_in_float32() -> None:
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.standard_normal((1, 32, 2, 8), dtype=np.float32)) for _ in range(3))
    out = causal_attention(*(t.astype(jnp.bfloat16) for t in (q, k, v)), 2)
    assert out.dtype == jnp.float32
    want = _reference(*(t.astype(jnp.bfloat16).astype(jnp.float32) for t in (q, k, v)), None)
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), rtol=1e-5, atol=1e-5)


@needs_compiler
@pytest.mark.parametrize("shape", [(37, 70), (64, 96), (8, 3)])  # ragged, whole 8 x 8 tiles and 32-wide bands, thin
def test_transpose_kernel_copies_a_bfloat16_matrix_transposed(shape: tuple[int, int]) -> None:
    a = jnp.asarray(np.random.default_rng(2).standard_normal(shape), jnp.bfloat16)
    assert cpu_matvec.transposes(a)
    got = jax.jit(cpu_matvec.transposed)(a)
    assert got.shape == shape[::-1] and got.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(a, np.float32).T)


@needs_compiler
def test_swap_kernel_transposes_batches_of_wide_elements() -> None:
    a = jnp.asarray(np.random.default_rng(4).standard_normal((3, 5, 7, 4)), jnp.bfloat16)
    assert cpu_matvec.transposes(a)
    got = jax.jit(lambda a: cpu_matvec.swapped(a, 3, 5, 7, 4))(a)
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(a, np.float32).transpose(0, 2, 1, 3))


@needs_compiler
@pytest.mark.parametrize("window", [None, 5])
def test_bfloat16_attention_matches_float32_arithmetic(window: int | None) -> None:
    """Values and gradients of the bf16 attention (whole square, transposes by neo's kernel, written-out backward)
    against the float32 reference on the same bf16 numbers, to bf16 precision; `attention` picks it for bf16 rows."""
    rng = np.random.default_rng(5)
    q, k, v, d_out = (_bf16(rng, 2, 24, 3, 8) for _ in range(4))
    mask = jnp.ones((2, 24, 24), bool)
    picked = jax.jit(lambda q, k, v: attention(q, k, v, mask, window, True)).lower(q, k, v).as_text()
    assert cpu_matvec.TRANSPOSE in picked

    def loss(f):
        return lambda q, k, v: jnp.vdot(f(q, k, v).astype(jnp.float32), d_out.astype(jnp.float32))

    def reference(q, k, v):
        return _reference(*(t.astype(jnp.float32) for t in (q, k, v)), window)

    got, want = bf16_attention(q, k, v, window), reference(q, k, v)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), rtol=2e-2, atol=2e-2)
    g_got = jax.jit(jax.grad(loss(lambda *a: bf16_attention(*a, window)), argnums=(0, 1, 2)))(q, k, v)
    g_want = jax.grad(loss(reference), argnums=(0, 1, 2))(q, k, v)
    for name, a, b in zip("qkv", g_got, g_want, strict=True):
        error = float(jnp.linalg.norm(a.astype(jnp.float32) - b) / jnp.linalg.norm(b))
        assert error < 0.02, (name, error)


def _bf16(rng: np.random.Generator, *shape: int) -> jax.Array:
    return jnp.asarray(rng.standard_normal(shape), jnp.bfloat16)


@needs_compiler
def test_bfloat16_matmul_and_bias_match_float32_arithmetic() -> None:
    """Values and gradients of the bf16 path (products accumulated in float32, the backward's transposes made by neo's
    kernel, the bias gradient a product with ones) against float32 arithmetic on the same bf16 numbers; and the
    program really calls the kernel."""
    rng = np.random.default_rng(3)
    x, w, b, dy = _bf16(rng, 96, 48), _bf16(rng, 48, 80), _bf16(rng, 80), _bf16(rng, 96, 80)

    def loss(f, dtype):
        return lambda x, w, b: jnp.vdot(f(x.astype(dtype), w.astype(dtype), b.astype(dtype)).astype(jnp.float32), dy)

    kernel = jax.jit(jax.value_and_grad(loss(lambda x, w, b: add_bias(cpu_matmul(x, w), b), jnp.bfloat16), (0, 1, 2)))
    assert cpu_matvec.TRANSPOSE in kernel.lower(x, w, b).as_text()
    got_value, got = kernel(x, w, b)
    want_value, want = jax.value_and_grad(loss(lambda x, w, b: x @ w + b, jnp.float32), (0, 1, 2))(x, w, b)
    assert float(got_value) == pytest.approx(float(want_value), rel=1e-2)
    for name, g, ref in zip(("x", "w", "b"), got, want, strict=True):
        assert g.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(ref), rtol=2e-2, atol=0.1, err_msg=name)


def test_float32_bias_keeps_its_plain_gradient() -> None:
    y, b = jnp.ones((4, 3)), jnp.arange(3.0)
    db = jax.grad(lambda b: jnp.sum(add_bias(y, b) * jnp.arange(4.0)[:, None]))(b)
    np.testing.assert_array_equal(np.asarray(db), np.full(3, 6.0))

"""The weighted cross-entropy, the z-loss, and the fused vocab projection + loss the trainer uses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neo.model.objectives import CHUNK_LOGITS_BYTES, auto_loss_chunks, cross_entropy, lm_head_loss, z_loss


def test_cross_entropy_weights() -> None:
    logits = jnp.log(jnp.array([[[0.5, 0.5], [0.9, 0.1]]]))
    targets = jnp.array([[0, 1]])
    assert float(cross_entropy(logits, targets, jnp.array([[1.0, 0.0]]))) == pytest.approx(np.log(2), rel=1e-6)
    assert float(cross_entropy(logits, targets)) == pytest.approx((np.log(2) - np.log(0.1)) / 2, rel=1e-6)


def _reference(x: jax.Array, head: jax.Array, targets: jax.Array, weights: jax.Array | None, z_coef: float):
    logits = jnp.einsum("bld,vd->blv", x, head)
    return cross_entropy(logits, targets, weights) + z_loss(jax.nn.logsumexp(logits, -1), z_coef)


@pytest.mark.parametrize("chunks", [1, 4])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("cpu_matmuls", [False, True])
def test_fused_head_loss_equals_logits_then_cross_entropy(chunks: int, weighted: bool, cpu_matmuls: bool) -> None:
    """Value and both gradients of the fused projection + loss match the unfused computation."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 16, 8)), jnp.float32)
    head = jnp.asarray(rng.normal(size=(40, 8)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 40, (2, 16)))
    weights = jnp.asarray(rng.integers(0, 2, (2, 16)), jnp.float32) if weighted else None

    def fused(x: jax.Array, head: jax.Array) -> jax.Array:
        return 3.0 * lm_head_loss(x, head, targets, weights, z_coef=1e-2, chunks=chunks, cpu_matmuls=cpu_matmuls)[0]

    def unfused(x: jax.Array, head: jax.Array) -> jax.Array:
        return 3.0 * _reference(x, head, targets, weights, 1e-2)

    assert float(fused(x, head)) == pytest.approx(float(unfused(x, head)), rel=1e-6)
    got, want = jax.jit(jax.grad(fused, argnums=(0, 1)))(x, head), jax.grad(unfused, argnums=(0, 1))(x, head)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-6, rtol=1e-5)
    _, (ce, z) = lm_head_loss(x, head, targets, weights, z_coef=1e-2, chunks=chunks)
    logits = jnp.einsum("bld,vd->blv", x, head)
    assert float(ce) == pytest.approx(float(cross_entropy(logits, targets, weights)), rel=1e-6)
    assert float(z) == pytest.approx(float(z_loss(jax.nn.logsumexp(logits, -1), 1e-2)), rel=1e-6)


@pytest.mark.parametrize("chunks", [1, 4])
def test_bfloat16_head_on_cpu_kernels_matches_float32(chunks: int) -> None:
    """In bfloat16 the CPU form (its transposes made by neo's kernel) gives the float32 loss and gradients of the same
    bf16 numbers, to bf16's precision."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 16, 8)), jnp.bfloat16)
    head = jnp.asarray(rng.normal(size=(40, 8)), jnp.bfloat16)
    targets = jnp.asarray(rng.integers(0, 40, (2, 16)))

    def fused(x: jax.Array, head: jax.Array) -> jax.Array:
        return lm_head_loss(x, head, targets, z_coef=1e-2, chunks=chunks, cpu_matmuls=True)[0]

    def unfused(x: jax.Array, head: jax.Array) -> jax.Array:
        return _reference(x.astype(jnp.float32), head.astype(jnp.float32), targets, None, 1e-2)

    assert float(fused(x, head)) == pytest.approx(float(unfused(x, head)), rel=1e-5)
    got, want = jax.jit(jax.grad(fused, argnums=(0, 1)))(x, head), jax.grad(unfused, argnums=(0, 1))(x, head)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w), rtol=2e-2, atol=2e-3)


def test_fused_head_loss_keeps_dtypes_and_checks_chunks() -> None:
    x, head = jnp.ones((1, 6, 4), jnp.bfloat16), jnp.ones((10, 4), jnp.float32)
    gx, gh = jax.grad(lambda x, h: lm_head_loss(x, h, jnp.zeros((1, 6), jnp.int32))[0], argnums=(0, 1))(x, head)
    assert gx.dtype == jnp.bfloat16 and gh.dtype == jnp.float32
    with pytest.raises(ValueError, match="does not divide"):
        lm_head_loss(x, head, jnp.zeros((1, 6), jnp.int32), chunks=4)


def test_auto_loss_chunks_are_the_fewest_divisors_within_the_logits_budget() -> None:
    assert auto_loss_chunks(8, 256, 8192) == 4  # 64 MiB of logits -> 4 x 16 MiB
    assert auto_loss_chunks(1, 128, 512) == 1
    chunks = auto_loss_chunks(8, 2048, 50257)  # GPT-Neo's vocab: 3.1 GiB of logits
    assert 2048 % chunks == 0 and 8 * (2048 // chunks) * 50257 * 4 <= CHUNK_LOGITS_BYTES
    assert 8 * (2048 // (chunks // 2)) * 50257 * 4 > CHUNK_LOGITS_BYTES  # not more chunks than needed
    assert auto_loss_chunks(1, 6, 10**9) == 6  # nothing fits: one token per chunk

"""The CPU training attention (query blocks, written-out backward) against the masked full square."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neo.model.kernels.cpu import causal_attention, query_spans


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

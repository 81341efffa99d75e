"""neo's CPU kernels for decoding (`neo.model.cpu_matvec`): products with int8 and bfloat16 weights equal the widened
weight's, attention's products with a float32 or bfloat16 KV cache equal NumPy's, decoding programs call them, and
without a compiler decoding falls back to XLA with one warning."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neo.model import cpu_matvec, decode
from neo.model.attention import BF16_BITS, from_cache, to_cache
from neo.model.common import FEW_ROWS, many_rows_times_weight
from neo.model.config import ModelConfig
from neo.model.decode import for_decoding, greedy_choice, init_cache, kv_dtype
from neo.model.quantize import Bf16Weight, Int8Weight, quantize_int8, quantize_params
from neo.model.transformer import GPTNeo
from tests.model.conftest import params_for, small

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++")


@pytest.fixture
def rebuilt() -> None:
    """`ready()` forgotten before and after: the test sees its own environment, later tests the normal kernel."""
    cpu_matvec.ready.cache_clear()
    yield
    cpu_matvec.ready.cache_clear()


def _weights(o: int, k: int, seed: int) -> tuple[Int8Weight, Bf16Weight]:
    w = np.random.default_rng(seed).standard_normal((o, k)).astype(np.float32)
    return quantize_int8(w), Bf16Weight(jnp.asarray(w, jnp.bfloat16))


@needs_compiler
@pytest.mark.parametrize(
    ("n", "o", "k"),
    [(1, 13, 77), (1, 4, 768), (2, 40, 64), (5, 9, 200), (8, 33, 768), (17, 6, 3), (64, 70, 1000)],
)
def test_products_equal_the_widened_weights_for_every_tile_and_tail(n: int, o: int, k: int) -> None:
    assert cpu_matvec.ready()  # a C++ compiler is here: the kernel builds
    x = np.random.default_rng(n).standard_normal((n, k)).astype(np.float32)
    for w in _weights(o, k, seed=o):
        want = x @ np.asarray(w.widened(), np.float64).T
        got = np.asarray(jax.jit(cpu_matvec.rows_times)(x, w))
        assert got.shape == (n, o) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


@needs_compiler
@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_decoding_calls_the_kernel_and_matches_xla_s_product(weights: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = small()
    dcfg, dparams = for_decoding(cfg, params_for(cfg))
    quantized = quantize_params(dparams, weights)
    tokens = np.random.RandomState(1).randint(0, cfg.n_vocab, size=(2, 4)).astype(np.int32)  # 8 rows: few
    target = cpu_matvec.INT8 if weights == "int8" else cpu_matvec.BF16
    forward = _forward(dcfg)  # traced anew each time: whether the kernel is used is decided while tracing
    text = forward.lower(quantized, tokens).as_text()
    three = cpu_matvec.THREE[type(quantized["h_0"]["attn"]["q"])]
    calls = [text.count(f"custom_call @{name}(") for name in (target, three)]
    assert calls == [cfg.n_layer * 3 + 1, cfg.n_layer]  # o, c_fc, c_proj per layer and the tied head; q, k, v as one
    kernel = np.asarray(forward(quantized, tokens))

    monkeypatch.setattr(cpu_matvec, "ready", lambda: False)
    forward = _forward(dcfg)
    assert target not in forward.lower(quantized, tokens).as_text()
    xla = np.asarray(forward(quantized, tokens))
    np.testing.assert_allclose(kernel, xla, rtol=0, atol=1e-5 * np.abs(xla).max())


@needs_compiler
def test_a_prefill_of_up_to_max_rows_reads_the_weight_at_its_own_width() -> None:
    """Past FEW_ROWS a prefill still takes the kernel up to MAX_ROWS rows (XLA would widen the whole weight to
    float32 in fresh buffers); beyond, XLA's product."""
    for w in _weights(96, 64, seed=3):
        target = cpu_matvec.INT8 if isinstance(w, Int8Weight) else cpu_matvec.BF16
        for rows in (FEW_ROWS + 16, cpu_matvec.MAX_ROWS, cpu_matvec.MAX_ROWS + 1):
            x = np.random.default_rng(rows).standard_normal((rows, 64)).astype(np.float32)
            product = jax.jit(many_rows_times_weight)
            assert (target in product.lower(x, w).as_text()) == (rows <= cpu_matvec.MAX_ROWS)
            want = x @ np.asarray(w.widened(), np.float64).T
            np.testing.assert_allclose(np.asarray(product(x, w)), want, rtol=0, atol=1e-5 * np.abs(want).max())


@needs_compiler
@pytest.mark.parametrize(("n", "s", "d"), [(1, 7, 64), (3, 5, 20), (2, 33, 136), (12, 384, 64), (96, 40, 64)])
@pytest.mark.parametrize("dtype", [jnp.float32, BF16_BITS])
def test_cache_products_equal_numpy_for_every_size_and_tail(n: int, s: int, d: int, dtype: Any) -> None:
    """Heads' scores q . k[j] and mixes sum p[j] v[j]; the last two sizes are split over threads."""
    rng = np.random.default_rng(n * s + d)
    q, p = rng.standard_normal((n, d)).astype(np.float32), rng.random((n, s)).astype(np.float32)
    k, v = (to_cache(rng.standard_normal((n, s, d)).astype(np.float32), dtype) for _ in range(2))
    k64, v64 = (np.asarray(from_cache(a).astype(jnp.float32), np.float64) for a in (k, v))
    scores, mixed = jax.jit(cpu_matvec.cache_scores)(q, k), jax.jit(cpu_matvec.cache_mix)(p, v)
    want = np.einsum("nd,nsd->ns", q, k64)
    assert scores.shape == (n, s) and scores.dtype == np.float32
    np.testing.assert_allclose(np.asarray(scores), want, rtol=0, atol=1e-5 * np.abs(want).max())
    want = np.einsum("ns,nsd->nd", p, v64)
    assert mixed.shape == (n, d) and mixed.dtype == np.float32
    np.testing.assert_allclose(np.asarray(mixed), want, rtol=0, atol=1e-5 * np.abs(want).max())


@needs_compiler
@pytest.mark.parametrize("weights", ["float32", "int8"])
def test_a_decode_step_reads_its_cache_through_the_kernel_and_matches_xla(
    weights: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every layer's cache meets the kernel once for scores and once for the mix; the logits equal XLA's dots'. Low-bit
    weights decode with a bfloat16 cache: two bytes per key and value."""
    cfg = small()
    dcfg, dparams = for_decoding(cfg, params_for(cfg))
    params = quantize_params(dparams, weights)
    cache = init_cache(dcfg, 2, 16, dtype=kv_dtype(dcfg, params))
    assert cache[0]["k"].dtype == (np.float32 if weights == "float32" else BF16_BITS)
    tokens = np.random.RandomState(2).randint(0, cfg.n_vocab, size=(2, 8)).astype(np.int32)
    positions, valid = np.tile(np.arange(8, dtype=np.int32), (2, 1)), np.ones((2, 8), bool)
    _, cache = decode.forward_fn(dcfg)(params, tokens, positions, valid, cache, np.int32(0))
    step = (params, tokens[:, :1], np.full((2, 1), 8, np.int32), np.ones((2, 1), bool), cache)
    program = jax.jit(decode.last_logits(dcfg))  # traced anew: whether the kernel is used is decided while tracing
    text = program.lower(*step).as_text()
    calls = [text.count(f"custom_call @{target}(") for target in (cpu_matvec.SCORES, cpu_matvec.MIX)]
    assert calls == [cfg.n_layer, cfg.n_layer]  # the decoding layout unrolls the layers
    kernel = np.asarray(program(*step)[0])

    monkeypatch.setattr(cpu_matvec, "ready", lambda: False)
    program = jax.jit(decode.last_logits(dcfg))
    assert cpu_matvec.SCORES not in program.lower(*step).as_text()
    xla = np.asarray(program(*step)[0])
    np.testing.assert_allclose(kernel, xla, rtol=0, atol=1e-5 * np.abs(xla).max())


def _forward(cfg: ModelConfig) -> Any:
    model = GPTNeo(cfg)
    return jax.jit(lambda params, tokens: model.apply({"params": params}, tokens))


def test_without_a_working_compiler_decoding_falls_back_with_one_warning(
    rebuilt: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEO_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", shutil.which("false") or "/bin/false")
    with pytest.warns(UserWarning, match="could not build its CPU kernels.*fall back to XLA"):
        assert not cpu_matvec.ready()
    assert not list((tmp_path / "kernels").glob("*.so"))  # no half-written library left behind
    x = np.ones((1, 8), np.float32)
    assert not cpu_matvec.handles(x, _weights(4, 8, seed=0)[0])
    cpu_matvec.ready.cache_clear()
    monkeypatch.setenv("NEO_CPU_KERNELS", "0")  # the off switch: no build, no warning
    assert not cpu_matvec.ready()


@needs_compiler
def test_a_build_in_another_cache_directory_keeps_the_kernel_already_registered(
    rebuilt: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cpu_matvec.ready()
    monkeypatch.setenv("NEO_CACHE_DIR", str(tmp_path))  # e.g. a test's own cache: the same code at other addresses
    cpu_matvec.ready.cache_clear()
    assert cpu_matvec.ready() and len(list((tmp_path / "kernels").glob("*.so"))) == 1
    x = np.ones((1, 8), np.float32)
    int8, _ = _weights(4, 8, seed=0)
    np.testing.assert_allclose(
        np.asarray(jax.jit(cpu_matvec.rows_times)(x, int8)), x @ np.asarray(int8.widened()).T, rtol=1e-6
    )


@needs_compiler
@pytest.mark.parametrize(("o", "k"), [(13, 77), (70, 1000), (768, 768)])
def test_a_float32_weight_meets_one_row_in_the_kernel_and_more_rows_in_xla(o: int, k: int) -> None:
    """Batch-1 decoding streams a float32 weight through the kernel too (faster than XLA's matrix-vector product);
    more rows (a batch, a prefill) stay with XLA's products, which reuse each weight across rows."""
    w = np.random.default_rng(o).standard_normal((o, k)).astype(np.float32)
    x = np.random.default_rng(k).standard_normal((1, k)).astype(np.float32)
    assert cpu_matvec.handles(x, w) and not cpu_matvec.handles(np.tile(x, (2, 1)), w)
    product = jax.jit(cpu_matvec.rows_times)
    assert f"custom_call @{cpu_matvec.F32}(" in product.lower(x, w).as_text()
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_allclose(np.asarray(product(x, w)), want, rtol=0, atol=1e-5 * np.abs(want).max())


@needs_compiler
@pytest.mark.parametrize("kind", ["float32", "bfloat16", "int8"])
def test_three_products_in_one_call_equal_three_calls(kind: str) -> None:
    """Attention's q, k and v at batch 1 are one kernel call (`dense_three`); each result equals its own product's."""
    rng = np.random.default_rng(5)
    float32 = [rng.standard_normal((o, 96)).astype(np.float32) for o in (40, 40, 40)]
    held = {
        "float32": jnp.asarray,
        "bfloat16": lambda w: Bf16Weight(jnp.asarray(w, jnp.bfloat16)),
        "int8": quantize_int8,
    }
    ws = tuple(held[kind](w) for w in float32)
    x = rng.standard_normal((1, 96)).astype(np.float32)
    together = jax.jit(cpu_matvec.rows_times_three)
    target = cpu_matvec.THREE[jax.Array if kind == "float32" else type(ws[0])]
    assert f"custom_call @{target}(" in together.lower(x, ws).as_text()
    for got, w in zip(together(x, ws), ws, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(jax.jit(cpu_matvec.rows_times)(x, w)))


def test_what_the_kernel_never_takes() -> None:
    x = np.ones((1, 8), np.float32)
    assert not cpu_matvec.handles(x.astype(jnp.bfloat16), _weights(4, 8, seed=0)[1])  # bfloat16 rows: XLA's
    assert not cpu_matvec.handles(x, np.ones((4, 8), jnp.bfloat16))  # a bfloat16 model's own weight: XLA's
    assert not cpu_matvec.handles(x, np.ones((4, 2, 4), np.float32))  # not a matrix


def test_greedy_choice_is_argmax_with_ties_to_the_first() -> None:
    logits = np.random.default_rng(0).standard_normal((4, 300)).astype(np.float32)
    logits[1, [7, 90]] = 10.0  # a tie: the first wins, as argmax
    logits[2, :] = -np.inf
    np.testing.assert_array_equal(np.asarray(jax.jit(greedy_choice)(logits)), np.argmax(logits, axis=-1))

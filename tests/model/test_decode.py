"""Incremental decoding: cached logits equal the full forward; sampling knobs are honoured; batching is exact."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from neo.model import decode
from neo.model.attention import BF16_BITS
from neo.model.decode import for_decoding, forward_fn, generate, init_cache, kv_dtype, sample_logits, seed_key
from tests.model.conftest import logits_fn, params_for, small

SEQ = np.random.RandomState(0).randint(0, 53, size=(1, 20)).astype(np.int32)


@pytest.mark.parametrize(
    "changes",
    [
        dict(),  # global/local, window 3: the local ring buffer wraps many times
        dict(attention_types=[[["linear", "none"], 2]], axial_pos_emb=[4, 8]),
        dict(num_mem_kv=2, rotary_emb=True, scan_layers=False),
    ],
)
def test_cached_logits_equal_full_forward_with_left_padding(changes: dict) -> None:
    cfg = small(**changes)
    params = params_for(cfg)
    full = np.asarray(logits_fn(cfg)(params, SEQ))
    prompt, width = 5, 8
    pad = width - prompt
    tokens = np.zeros((1, width), np.int32)
    tokens[0, pad:] = SEQ[0, :prompt]
    valid = np.arange(width)[None] >= pad
    positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32)
    forward = forward_fn(cfg)
    logits, cache = forward(params, tokens, positions, valid, init_cache(cfg, 1, width + 15), jnp.int32(0))
    errors = [np.abs(np.asarray(logits) - full[:, prompt - 1]).max()]
    for t in range(prompt, 20):
        step = (SEQ[:, t : t + 1], np.array([[t]], np.int32), np.ones((1, 1), bool))
        logits, cache = forward(params, *step, cache, jnp.int32(t + pad))
        errors.append(np.abs(np.asarray(logits) - full[:, t]).max())
    assert max(errors) < 1e-5


def test_a_bfloat16_model_decodes_through_its_cache_held_as_bits() -> None:
    """A bfloat16 model's cache holds bfloat16 bits (uint16, which XLA CPU updates in place); its cached logits
    equal its full forward's within bfloat16's rounding."""
    cfg = small(precision="bfloat16")
    params = params_for(cfg)
    full = np.asarray(logits_fn(cfg)(params, SEQ), np.float32)
    cache = init_cache(cfg, 1, 24)
    assert cache[0]["k"].dtype == BF16_BITS and kv_dtype(small()) == jnp.float32
    forward = forward_fn(cfg)
    positions = np.arange(8, dtype=np.int32)[None]
    logits, cache = forward(params, SEQ[:, :8], positions, np.ones((1, 8), bool), cache, jnp.int32(0))
    errors = [np.abs(np.asarray(logits, np.float32) - full[:, 7]).max()]
    for t in range(8, 20):
        step = (SEQ[:, t : t + 1], np.array([[t]], np.int32), np.ones((1, 1), bool))
        logits, cache = forward(params, *step, cache, jnp.int32(t))
        errors.append(np.abs(np.asarray(logits, np.float32) - full[:, t]).max())
    assert max(errors) < 0.02 * np.abs(full).max()


def test_the_kv_cache_is_rounded_to_multiples_of_64_not_to_a_power_of_two(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step reads every slot of a global layer's cache: 8 prompt slots and 130 new tokens need 192, not 256."""
    lengths: list[int] = []
    placed = decode.placed_cache
    monkeypatch.setattr(decode, "placed_cache", lambda cfg, b, n, *a: lengths.append(n) or placed(cfg, b, n, *a))
    cfg = small(n_ctx=256)
    assert len(generate(cfg, params_for(cfg), [[1, 2, 3]], max_new_tokens=130, temperature=0)[0]) == 130
    assert lengths == [192]


def test_local_cache_holds_only_the_window() -> None:
    cache = init_cache(small(window_size=3), batch=2, length=100)
    assert cache[0]["k"].shape == (2, 2, 4, 100, 8) and cache[1]["k"].shape == (2, 2, 4, 3, 8)


def test_greedy_equals_argmax_of_full_recompute_and_batched_equals_unbatched() -> None:
    cfg = small()
    params = params_for(cfg)
    prompts = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18]]
    outs = generate(cfg, params, prompts, max_new_tokens=8, temperature=0)
    forward = logits_fn(cfg)
    for prompt, out in zip(prompts, outs, strict=True):
        assert len(out) == 8
        seq = list(prompt)
        for token in out:  # right-padded to one shape (one compile); causality makes the padding invisible
            padded = jnp.asarray([seq + [0] * (32 - len(seq))])
            assert int(np.argmax(forward(params, padded)[0, len(seq) - 1])) == token
            seq.append(token)
        assert generate(cfg, params, [prompt], max_new_tokens=8, temperature=0) == [out]


def test_same_seed_same_output_and_eos_stops_a_row() -> None:
    cfg = small()
    params = params_for(cfg)
    prompts = [[1, 2, 3], [4, 5, 6, 7]]
    a = generate(cfg, params, prompts, max_new_tokens=10, seed=3)
    assert a == generate(cfg, params, prompts, max_new_tokens=10, seed=3)
    assert a != generate(cfg, params, prompts, max_new_tokens=10, seed=4)
    eos = a[0][2]
    seen: list[tuple[int, int]] = []
    stopped = generate(
        cfg, params, prompts, max_new_tokens=10, seed=3, eos_id=eos, on_token=lambda r, t: seen.append((r, t))
    )
    assert stopped[0] == a[0][: a[0].index(eos)]
    assert sorted(seen) == sorted((r, t) for r, row in enumerate(stopped) for t in row)


def test_top_k_and_top_p_never_emit_excluded_tokens() -> None:
    logits = jnp.asarray(np.random.RandomState(1).normal(size=(4, 50)) * 3, jnp.float32)
    probs = np.asarray(jnp.exp(logits) / jnp.exp(logits).sum(-1, keepdims=True))
    top3 = np.argsort(-np.asarray(logits), axis=-1)[:, :3]
    order = np.argsort(-probs, axis=-1)
    mass_before = np.cumsum(np.take_along_axis(probs, order, -1), -1) - np.take_along_axis(probs, order, -1)
    nucleus = [set(order[r][mass_before[r] < 0.5].tolist()) for r in range(4)]
    import jax

    for i in range(200):
        key = jax.random.PRNGKey(i)
        k = np.asarray(sample_logits(logits, key, jnp.float32(1.5), jnp.int32(3), jnp.float32(1.0)))
        assert all(k[r] in top3[r] for r in range(4))
        p = np.asarray(sample_logits(logits, key, jnp.float32(1.0), jnp.int32(0), jnp.float32(0.5)))
        assert all(p[r] in nucleus[r] for r in range(4))


def test_generate_rejects_prompts_beyond_the_context() -> None:
    from neo.errors import ConfigError

    with pytest.raises(ConfigError, match="n_ctx"):
        generate(small(), params_for(small()), [[1] * 30], max_new_tokens=5)


@pytest.mark.parametrize(
    "changes", [dict(), dict(no_weight_tie=True, mlp_glu=True, n_layer=2, attention_types=["global"] * 2)]
)
@pytest.mark.parametrize("rows", [1, 3])  # few rows take the transposed products, 3 x 32 = 96 the usual ones
def test_decoding_layout_computes_the_same_logits(changes: dict, rows: int) -> None:
    cfg = small(**changes)
    params = params_for(cfg)
    dcfg, dparams = for_decoding(cfg, params)
    assert dcfg.weights_out_first and not dcfg.scan_layers
    layer = dparams["h_0"]
    assert layer["attn"]["q"].shape == (4, 8, 32) and layer["attn"]["o"].shape == (32, 4, 8)
    assert layer["mlp"]["c_fc"].shape == (128, 32) and dparams["wte"].shape == (53, 32)
    tokens = np.random.RandomState(2).randint(0, 53, size=(rows, 32)).astype(np.int32)
    for length in (1, 32):
        want = np.asarray(logits_fn(cfg)(params, tokens[:, :length]))
        got = np.asarray(logits_fn(dcfg)(dparams, tokens[:, :length]))
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


def test_ids_beyond_the_tokenizer_are_never_emitted() -> None:
    """A model vocabulary padded past its tokenizer's (e.g. rounded up to 128) never samples the padding rows."""
    cfg = small()
    params = params_for(cfg)
    prompt = [SEQ[0, :5].tolist()]
    free = generate(cfg, params, prompt, max_new_tokens=24, temperature=5.0, seed=1)
    assert max(free[0]) >= 20  # hot sampling over the whole vocabulary reaches the high ids
    for seed in range(3):
        limited = generate(cfg, params, prompt, max_new_tokens=24, temperature=5.0, seed=seed, vocab_size=20)
        assert max(limited[0]) < 20
    greedy = generate(cfg, params, prompt, max_new_tokens=8, temperature=0.0, vocab_size=20)
    assert max(greedy[0]) < 20


@pytest.mark.parametrize("seed", [0, 1, 1234567, 2**31, 2**32 - 1])
def test_host_made_key_equals_jax_prngkey(seed: int) -> None:
    import jax

    assert np.array_equal(seed_key(seed), np.asarray(jax.random.key_data(jax.random.PRNGKey(seed))))

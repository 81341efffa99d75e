"""Quantized decoding weights (`neo sample --weights bfloat16 | int8`): what is stored, and how close the logits stay.

Tolerances are stated against the float32 logits' own spread (their standard deviation over the vocabulary), on the
small test model at its initialisation. (A random model with larger weights is chaotic: tiny weight changes flip its
unscaled attention, so it says little about a trained one; the held-out loss of a trained run is measured in
`benchmarks/quantized_decode.py`.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neo.model.decode import for_decoding, generate
from neo.model.quantize import Bf16Weight, Int8Weight, quantize_int8, quantize_params, weight_bytes
from tests.model.conftest import logits_fn, params_for, small


def test_int8_is_per_output_channel_and_within_half_a_step() -> None:
    w = np.random.RandomState(0).normal(size=(6, 5, 7)).astype(np.float32) * np.arange(1, 7)[:, None, None]
    one = quantize_int8(w, n_in=1)  # inputs on the last axis: one scale per [6, 5] output
    two = quantize_int8(w, n_in=2)  # inputs on the last two axes: one scale per row of 6
    assert one.q.dtype == jnp.int8 and one.scale.shape == (6, 5) and two.scale.shape == (6,)
    for quantized in (one, two):
        step = np.asarray(quantized.widened() - w)
        scale = np.asarray(quantized.scale).reshape(*quantized.scale.shape, *(1,) * (3 - quantized.scale.ndim))
        assert np.all(np.abs(step) <= scale / 2 + 1e-7)  # round to nearest
        assert int(np.max(np.abs(np.asarray(quantized.q)))) == 127  # the largest weight of each channel maps to 127


@pytest.mark.parametrize(("weights", "typical", "worst"), [("bfloat16", 0.01, 0.05), ("int8", 0.03, 0.2)])
def test_quantized_decoding_logits_stay_close_and_int8_really_stores_int8(
    weights: str, typical: float, worst: float
) -> None:
    cfg = small()
    dcfg, dparams = for_decoding(cfg, params_for(cfg))
    quantized = quantize_params(dparams, weights)
    leaves = jax.tree_util.tree_flatten_with_path(quantized)[0]
    wanted = jnp.int8 if weights == "int8" else jnp.bfloat16
    big = [leaf for path, leaf in leaves if leaf.ndim >= 2 and getattr(path[-1], "key", "") != "wpe"]
    assert big and all(leaf.dtype == wanted for leaf in big if leaf.shape[-1] == cfg.n_embd or leaf.ndim == 3)
    if weights == "bfloat16":  # held apart from a model's own bfloat16 parameters: decoding widens it
        assert isinstance(quantized["wte"], Bf16Weight) and isinstance(quantized["h_0"]["attn"]["o"], Bf16Weight)
    if weights == "int8":
        assert isinstance(quantized["wte"], Int8Weight) and isinstance(quantized["h_0"]["attn"]["o"], Int8Weight)
        assert quantized["h_0"]["attn"]["o"].scale.shape == (cfg.n_embd,)  # [d, heads, kv]: one scale per d
    full, small_bytes = weight_bytes(dparams), weight_bytes(quantized)
    assert small_bytes < full * (0.35 if weights == "int8" else 0.6)  # norms, biases and wpe stay float32 here
    wte_bytes = weight_bytes(quantized["wte"])
    assert (
        wte_bytes == dparams["wte"].nbytes // 4 + 4 * cfg.n_vocab if weights == "int8" else dparams["wte"].nbytes // 2
    )

    tokens = np.random.RandomState(1).randint(0, cfg.n_vocab, size=(2, 24)).astype(np.int32)
    want = np.asarray(logits_fn(dcfg)(dparams, tokens))
    got = np.asarray(logits_fn(dcfg)(quantized, tokens))
    error = np.abs(got - want) / want.std(axis=-1, keepdims=True)
    assert np.median(error) < typical and np.max(error) < worst
    assert np.mean(got.argmax(-1) == want.argmax(-1)) > 0.9


def test_generate_with_quantized_weights_decodes_and_int8_follows_float32_greedy() -> None:
    cfg = small()
    params = params_for(cfg)
    prompts = [[1, 2, 3, 4, 5], [7, 8]]
    exact = generate(cfg, params, prompts, max_new_tokens=8, temperature=0)
    for weights in ("bfloat16", "int8"):
        out = generate(cfg, params, prompts, max_new_tokens=8, temperature=0, weights=weights)
        assert [len(row) for row in out] == [8, 8]
        agree = sum(a == b for row, ref in zip(out, exact, strict=True) for a, b in zip(row, ref, strict=True))
        assert agree >= 14, (weights, out, exact)  # greedy may part ways late, on a near tie; not from the start


def test_params_held_quantized_refuse_a_mesh_in_one_line() -> None:
    from jax.sharding import AxisType

    from neo.errors import ConfigError

    cfg = small()
    dcfg, dparams = for_decoding(cfg, params_for(cfg))
    mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Auto,))
    with pytest.raises(ConfigError, match="--weights int8 decodes on one device"):  # held so, though not asked for
        generate(dcfg, quantize_params(dparams, "int8"), [[1, 2]], max_new_tokens=2, mesh=mesh, rules=())

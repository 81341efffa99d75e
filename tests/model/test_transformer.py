"""The GPT-Neo module: shapes, causality, exact local windows, init scales, dropout, scan, every option."""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neo.model.moe import top2_routing
from neo.model.params import init_params, layer_params, stack_layer_params
from neo.model.transformer import GPTNeo, total_aux_loss
from tests.model.conftest import logits_fn, params_for, small

TOKENS = jnp.asarray(np.random.RandomState(0).randint(0, 53, size=(2, 16)), jnp.int32)

OPTIONS = {
    "global": dict(attention_types=[[["global"], 4]]),
    "local": dict(attention_types=[[["local"], 4]]),
    "linear": dict(attention_types=[[["linear", "global"], 2]]),
    "none": dict(attention_types=[[["global", "none"], 2]]),
    "mem_kv": dict(num_mem_kv=3),
    "axial": dict(axial_pos_emb=[4, 8]),
    "rotary": dict(rotary_emb=True),
    "glu": dict(mlp_glu=True, activation_function="silu"),
    "scalenorm": dict(scalenorm=True),
    "rezero": dict(rezero=True),
    "macaron": dict(macaron=True),
    "moe": dict(moe_layers=[1, 3]),
    "untied": dict(no_weight_tie=True),
    "bf16": dict(precision="bfloat16"),
    "bf16_params": dict(precision="bfloat16", param_dtype="bfloat16"),
    "remat": dict(remat_policy="full"),
    "scale_by_in": dict(scale_by_in=True),
}


def _logits(cfg, params, tokens=TOKENS):
    return np.asarray(logits_fn(cfg)(params, tokens))


COMBOS = {  # every option switched on in a few models, so the default suite compiles only a handful
    "positions_and_memory": dict(num_mem_kv=3, rotary_emb=True, mlp_glu=True, macaron=True, no_weight_tie=True),
    "norms_and_types": dict(attention_types=[[["linear", "none"], 2]], axial_pos_emb=[4, 8], scalenorm=True),
    "moe_bf16_remat": dict(moe_layers=[1, 3], precision="bfloat16", remat_policy="full", scale_by_in=True),
}


def test_init_is_boxed_with_logical_axes_and_logits_are_float32() -> None:
    cfg = small()
    variables = GPTNeo(cfg).init({"params": jax.random.PRNGKey(0)}, TOKENS)
    boxes = jax.tree.leaves(variables["params"], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert all(isinstance(b, nn.LogicallyPartitioned) for b in boxes)
    assert {"layers", "embd", "heads", "kv", "mlp", "vocab"} <= {n for b in boxes for n in b.names}
    assert all(
        b.names[0] == "layers"
        for b in jax.tree.leaves(
            variables["params"]["blocks"], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
        )
    )
    out = GPTNeo(cfg).apply(variables, TOKENS)
    assert out.shape == (2, 16, 53) and out.dtype == jnp.float32


def _check_causal(name: str, changes: dict) -> None:
    cfg = small(**changes)
    params = params_for(cfg)
    both = _logits(cfg, params, jnp.concatenate([TOKENS, TOKENS.at[:, 9].set((TOKENS[:, 9] + 1) % 53)]))
    base, changed = both[:2], both[2:]
    assert base.shape == (2, 16, 53) and np.isfinite(base).all()
    tol = 1e-2 if "bf16" in name else 1e-5
    np.testing.assert_allclose(changed[:, :9], base[:, :9], atol=tol)
    if name != "rezero":  # rezero blocks start as the identity: later positions cannot see token 9 yet
        assert np.abs(changed[:, 9:] - base[:, 9:]).max() > 1e-4


@pytest.mark.parametrize("name", sorted(COMBOS))
def test_option_combinations_run_and_are_causal(name: str) -> None:
    _check_causal(name, COMBOS[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_each_option_runs_and_is_causal(name: str) -> None:
    _check_causal(name, OPTIONS[name])


@pytest.mark.parametrize("name", ["global", "positions_and_memory"])
def test_scanned_equals_unrolled(name: str) -> None:
    changes = {**OPTIONS, **COMBOS}[name]
    cfg = small(**changes)
    unrolled = small(**changes, scan_layers=False)
    params = params_for(cfg)
    rest = {k: v for k, v in params.items() if k != "blocks"}
    flat = {**rest, **stack_layer_params(unrolled, layer_params(cfg, params))}
    np.testing.assert_allclose(_logits(unrolled, flat), _logits(cfg, params), atol=1e-5)
    restacked = stack_layer_params(cfg, layer_params(unrolled, flat))
    assert jax.tree.all(jax.tree.map(np.array_equal, restacked["blocks"], jax.tree.map(np.asarray, params["blocks"])))


@pytest.mark.parametrize("window", [1, 3, 5])
def test_local_window_edges_are_exact(window: int) -> None:
    cfg = small(n_layer=1, attention_types=[[["local"], 1]], window_size=window)
    params = params_for(small(n_layer=1, attention_types=[[["local"], 1]], window_size=1))
    j = 6
    diff = np.abs(_logits(cfg, params) - _logits(cfg, params, TOKENS.at[:, j].set((TOKENS[:, j] + 1) % 53)))
    seen = diff.max(axis=(0, 2)) > 1e-6
    assert seen.tolist() == [j <= i <= j + window - 1 for i in range(16)]


def test_mlm_attention_is_bidirectional() -> None:
    cfg = small(mlm_training=True, mlm_mask_id=0)
    params = params_for(small())
    diff = np.abs(_logits(cfg, params) - _logits(cfg, params, TOKENS.at[:, 9].set((TOKENS[:, 9] + 1) % 53)))
    assert (diff[:, :9].max(axis=(0, 2)) > 1e-6).all()


def test_initializer_standard_deviations() -> None:
    cfg = small(n_embd=256, n_head=4, n_layer=4, n_vocab=512, n_ctx=256)
    p = init_params(cfg, seed=1)
    layer = layer_params(cfg, p)[0]
    d, hd = 256, 64
    expected = {
        "wte": (p["wte"], 0.02),
        "wpe": (p["pos"]["wpe"], 0.01),
        "q": (layer["attn"]["q"], (d * hd) ** -0.5),
        "k": (layer["attn"]["k"], d**-0.5),
        "v": (layer["attn"]["v"], d**-0.5),
        "o": (layer["attn"]["o"], d**-0.5 / math.sqrt(4)),
        "c_fc": (layer["mlp"]["c_fc"], 0.02),
        "c_proj": (layer["mlp"]["c_proj"], 0.02 / math.sqrt(4)),
    }
    for name, (value, std) in expected.items():
        assert np.std(np.asarray(value)) == pytest.approx(std, rel=0.05), name
    assert np.all(np.asarray(layer["mlp"]["c_fc_bias"]) == 0) and np.all(np.asarray(layer["ln_1"]["scale"]) == 1)
    flat = small(n_embd=256, n_head=4, n_vocab=512, n_ctx=256, scale_by_depth=False)
    unscaled = layer_params(flat, init_params(flat))[0]
    assert np.std(np.asarray(unscaled["mlp"]["c_proj"])) == pytest.approx(0.02, rel=0.05)


def test_dropout_is_honoured() -> None:
    params = params_for(small())
    det = _logits(small(), params)
    for key in ("embed_dropout", "attn_dropout", "res_dropout"):
        cfg = small(**{key: 0.5})
        model = GPTNeo(cfg)
        run = jax.jit(
            lambda p, seed, m=model: m.apply({"params": p}, TOKENS, deterministic=False, rngs={"dropout": seed})
        )
        first, again, other = (np.asarray(run(params, jax.random.PRNGKey(s))) for s in (0, 0, 1))
        np.testing.assert_array_equal(_logits(cfg, params), det)  # deterministic = no dropout at all
        assert np.abs(first - det).max() > 1e-3 and np.abs(first - other).max() > 1e-3, key
        np.testing.assert_array_equal(first, again)


def test_moe_routing_capacity_drops_and_aux_loss() -> None:
    probs = jnp.array([[[0.7, 0.2, 0.1, 0.0]] * 5])  # every token prefers expert 0, then expert 1
    combine, aux = top2_routing(probs, capacity=2)
    kept = np.asarray(combine.sum(-1))  # [b, l, e] gate weight that reached each expert
    assert (kept[0, :, 0] > 0).tolist() == [True, True, False, False, False]  # expert 0 full after two tokens
    assert (kept[0, :, 1] > 0).tolist() == [True, True, False, False, False]
    np.testing.assert_allclose(kept[0, 0, :2], [0.7 / 0.9, 0.2 / 0.9], rtol=1e-6)
    assert float(aux) == pytest.approx(4 * 0.7)  # E * f_0 * P_0 with f_0 = 1
    balanced = jnp.eye(4)[None] * 0.9 + 0.025
    assert float(top2_routing(balanced, capacity=4)[1]) == pytest.approx(1.0)


def test_aux_losses_are_sown_for_the_trainer() -> None:
    cfg = small(moe_layers=[1, 3], z_loss=1e-3)
    params = params_for(small(moe_layers=[1, 3]))
    logits, state = GPTNeo(cfg).apply({"params": params}, TOKENS, mutable=["losses"])
    losses = state["losses"]
    z = 1e-3 * jnp.mean(jax.nn.logsumexp(logits, -1) ** 2)
    assert float(jnp.sum(losses["z_loss"][0])) == pytest.approx(float(z), rel=1e-5)
    moe = jax.tree.leaves(losses["blocks"])
    assert len(moe) == 1 and moe[0].shape == (2,)  # one entry per scanned repeat of the MoE layer
    assert float(total_aux_loss(losses)) == pytest.approx(float(z + jnp.sum(moe[0])), rel=1e-5)


@pytest.mark.parametrize("glu", [False, True])
def test_cpu_matmul_forms_keep_values_and_gradients(glu: bool) -> None:
    """The cpu kernels (`auto` on CPU devices) only reorder the backward products: same loss, same
    gradients for every parameter, including MLP weights wider out than in and narrower (the two orientations)."""
    cfg = small(mlp_glu=glu)
    params = params_for(cfg)
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, cfg.n_vocab, (2, cfg.n_ctx)))

    def loss(c):
        model = GPTNeo(c)
        return lambda p: jnp.mean(model.apply({"params": p}, tokens) ** 2)

    want_loss, want = jax.value_and_grad(loss(dataclasses.replace(cfg, attention_impl="xla")))(params)
    got_loss, got = jax.jit(jax.value_and_grad(loss(dataclasses.replace(cfg, attention_impl="cpu"))))(params)
    assert float(got_loss) == pytest.approx(float(want_loss), rel=1e-6)
    flat_want = jax.tree_util.tree_leaves_with_path(nn.meta.unbox(want))
    flat_got = dict(jax.tree_util.tree_leaves_with_path(nn.meta.unbox(got)))
    assert len(flat_want) == len(flat_got)
    for path, w in flat_want:
        np.testing.assert_allclose(np.asarray(flat_got[path]), np.asarray(w), rtol=2e-5, atol=1e-7, err_msg=str(path))


@pytest.mark.parametrize("length", [96, 256])
@pytest.mark.parametrize("window", [3, 40])
def test_query_blocks_equal_the_full_square(length: int, window: int) -> None:
    """In-order training rows skip, per block of queries, the keys the causal/local mask hides: same logits and
    gradients as the full square (taken when positions are passed explicitly)."""
    from neo.model.kernels.xla import query_blocks

    assert query_blocks(length) == {96: 2, 256: 8}[length]
    cfg = small(n_ctx=256, window_size=window)
    params = params_for(cfg)
    model = GPTNeo(cfg)
    tokens = jnp.asarray(np.random.default_rng(5).integers(0, cfg.n_vocab, (2, length)))
    positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), tokens.shape)

    def loss(p, explicit: bool):
        logits = model.apply({"params": p}, tokens, positions=positions if explicit else None)
        return jnp.mean(jnp.tanh(logits)), logits

    (_, blocked), g_blocked = jax.value_and_grad(loss, has_aux=True)(params, False)
    (_, full), g_full = jax.value_and_grad(loss, has_aux=True)(params, True)
    np.testing.assert_allclose(np.asarray(blocked), np.asarray(full), rtol=1e-5, atol=1e-5)
    for gb, gf in zip(jax.tree.leaves(nn.meta.unbox(g_blocked)), jax.tree.leaves(nn.meta.unbox(g_full)), strict=True):
        np.testing.assert_allclose(np.asarray(gb), np.asarray(gf), rtol=1e-4, atol=1e-7)


def test_the_dots_remat_policy_recomputes_bf16_products_widened_to_float32() -> None:
    """The `dots` remat policies save products' outputs, but not the float32 output of a bf16 product that neo's CPU
    kernels round right after (recomputing it was 12% faster than saving it)."""
    from types import SimpleNamespace

    from jax import lax

    from neo.model.transformer import REMAT_POLICIES

    bf16, f32 = SimpleNamespace(dtype=jnp.bfloat16), SimpleNamespace(dtype=jnp.float32)
    matmul = {"dimension_numbers": (((1,), (0,)), ((), ()))}  # [m, k] x [k, n], no batch dims
    for name in ("dots", "dots_no_batch"):
        policy = REMAT_POLICIES[name]
        assert not policy(lax.dot_general_p, bf16, bf16, preferred_element_type=np.dtype("float32"), **matmul)
        assert policy(lax.dot_general_p, bf16, bf16, preferred_element_type=np.dtype("bfloat16"), **matmul)
        assert policy(lax.dot_general_p, f32, f32, preferred_element_type=np.dtype("float32"), **matmul)
        assert not policy(lax.exp_p, f32)


def test_the_dots_remat_policy_saves_the_fused_attention_kernels_output() -> None:
    """Under the `dots` policy neo's float32 CPU attention kernel runs once a step: its output and log-sum-exps are
    saved for the backward pass, not recomputed there as under `full`."""
    import shutil

    from neo.model import cpu_matvec
    from neo.model.kernels.cpu import fused_attention
    from neo.model.transformer import REMAT_POLICIES

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler")
    q = jnp.asarray(np.random.default_rng(0).standard_normal((1, 32, 2, 16)), jnp.float32)
    assert cpu_matvec.attends(q, q, q)

    def forward_calls(policy: object) -> int:
        loss = jax.checkpoint(lambda q: jnp.sum(fused_attention(q, q, q) ** 2), policy=policy)
        return jax.jit(jax.value_and_grad(loss)).lower(q).as_text().count("@neo_attention_f32(")

    assert forward_calls(REMAT_POLICIES["dots"]) == 1
    assert forward_calls(REMAT_POLICIES["full"]) == 2

"""The train step's loss under mixed precision: bfloat16 activations over float32 master parameters."""

from __future__ import annotations

import dataclasses
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neo.config import OptimizerConfig
from neo.model import cpu_matvec
from neo.model.config import ModelConfig
from neo.model.params import init_params
from neo.model.transformer import GPTNeo
from neo.train.optimizer import build_optimizer
from neo.train.step import loss_fn

F32 = jnp.dtype(jnp.float32)


F32_MODEL = ModelConfig(
    n_vocab=97, n_ctx=32, n_embd=64, n_head=4, n_layer=2, attention_types=[[["global", "local"], 1]],
    window_size=8, z_loss=1e-3, precision="float32",
)  # fmt: skip
BF16_MODEL = dataclasses.replace(F32_MODEL, precision="bfloat16")


def _loss_and_grads(cfg: ModelConfig, params: Any, batch: jax.Array, lowered: list[str] | None = None) -> Any:
    step = jax.jit(jax.value_and_grad(lambda p: loss_fn(GPTNeo(cfg), p, batch, None), has_aux=True))
    if lowered is not None:
        lowered.append(step.lower(params).as_text())
    return step(params)


def test_a_bfloat16_forward_has_a_float32_loss_close_to_the_float32_one() -> None:
    """Loss, logsumexp (z-loss) and cross-entropy stay float32 when the activations are bfloat16, and so do the
    gradients and the optimizer state of the float32 parameters."""
    f32, bf16 = F32_MODEL, BF16_MODEL
    params = init_params(f32)  # the same float32 parameters for both
    assert {p.dtype for p in jax.tree.leaves(init_params(bf16))} == {F32}  # param_dtype, not precision
    batch = jnp.asarray(np.random.default_rng(0).integers(0, f32.n_vocab, (4, f32.n_ctx + 1)), jnp.int32)

    def loss(cfg: ModelConfig):
        return _loss_and_grads(cfg, params, batch)

    (want, want_parts), _ = loss(f32)
    (got, parts), grads = loss(bf16)
    assert got.dtype == parts["ce_loss"].dtype == parts["aux_loss"].dtype == F32
    np.testing.assert_allclose(float(got), float(want), rtol=1e-2)
    np.testing.assert_allclose(float(parts["ce_loss"]), float(want_parts["ce_loss"]), rtol=1e-2)
    np.testing.assert_allclose(float(parts["aux_loss"]), float(want_parts["aux_loss"]), rtol=5e-2)
    assert {g.dtype for g in jax.tree.leaves(grads)} == {F32}
    opt_state = build_optimizer(OptimizerConfig(), 10).init(params)
    assert {a.dtype for a in jax.tree.leaves(opt_state) if jnp.issubdtype(a.dtype, jnp.floating)} == {F32}
    # the activations really are bfloat16: the final hidden states the fused head loss reads
    features = GPTNeo(bf16).apply({"params": params}, batch[:, :-1], method=GPTNeo.features)
    assert features.dtype == jnp.bfloat16


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler")
def test_bfloat16_gradients_on_cpu_stay_close_to_float32_through_neos_kernels() -> None:
    """On CPU the bf16 step takes XLA's fast bf16 products, their transposes made by neo's kernel (the program calls
    it); each parameter's gradient stays within bf16 precision of the float32 one (relative error under 5%)."""
    params = init_params(F32_MODEL)
    batch = jnp.asarray(np.random.default_rng(1).integers(0, F32_MODEL.n_vocab, (4, F32_MODEL.n_ctx + 1)), jnp.int32)
    lowered: list[str] = []
    _, got = _loss_and_grads(BF16_MODEL, params, batch, lowered)
    _, want = _loss_and_grads(F32_MODEL, params, batch)
    assert cpu_matvec.TRANSPOSE in lowered[0]
    for path, g, w in zip(jax.tree.leaves_with_path(got), jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        error = float(jnp.linalg.norm(g - w) / jnp.maximum(jnp.linalg.norm(w), 1e-12))
        assert error < 0.05, (jax.tree_util.keystr(path[0]), error)


def test_the_train_step_asks_xla_cpu_for_512_bit_vectors_and_leaves_other_platforms_alone() -> None:
    from types import SimpleNamespace

    from jax.sharding import Mesh

    from neo.train.step import compiler_options

    cpu = Mesh(np.asarray(jax.devices("cpu")[:1]), ("data",))
    assert compiler_options(cpu) == {"xla_cpu_prefer_vector_width": 512}
    tpu = SimpleNamespace(devices=np.asarray([SimpleNamespace(platform="tpu")] * 4).reshape(2, 2))
    assert compiler_options(tpu) is None  # type: ignore[arg-type]

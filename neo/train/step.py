"""The jitted train and eval steps.

One code path for one device and for a pod: the batch arrives sharded over the `batch` logical axis, parameters
and optimizer state keep their layout shardings (buffers donated), and XLA inserts the collectives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from neo.data.pipeline import MlmBatch
from neo.model.config import ModelConfig
from neo.model.kernels import kernels_for
from neo.model.objectives import lm_head_loss
from neo.model.transformer import GPTNeo, output_embedding, total_aux_loss
from neo.parallel.mesh import placement
from neo.train.state import State, StateLayout

Metrics = dict[str, jax.Array]


def batch_shape(cfg: ModelConfig, rows: int) -> tuple[int, ...]:
    """The shape of a step's batch of `rows` sequences: [rows, n_ctx + 1] tokens, or for MLM (`model.mlm_training`)
    [rows, 2, n_ctx + 1]: the masked inputs and the labels (the original token where masked, -1 elsewhere)."""
    return (rows, 2, cfg.n_ctx + 1) if cfg.mlm_training else (rows, cfg.n_ctx + 1)


def pack_batch(local: np.ndarray | MlmBatch) -> np.ndarray:
    """A host batch from the input pipeline in the step's layout (`batch_shape`): an MLM batch as one int32 array."""
    if isinstance(local, MlmBatch):
        local = np.stack([local.inputs, local.labels], axis=1)
    return np.asarray(local, np.int32)


def split_batch(cfg: ModelConfig, batch: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """(inputs, targets, loss weights) of a step's batch: the next token everywhere, or MLM's masked positions only."""
    if cfg.mlm_training:
        inputs, labels = batch[:, 0, :-1], batch[:, 1, :-1]
        return inputs, jnp.maximum(labels, 0), (labels >= 0).astype(jnp.float32)
    return batch[:, :-1], batch[:, 1:], None


def loss_fn(
    model: GPTNeo, params: Any, batch: jax.Array, rng: jax.Array | None, loss_chunks: int = 1
) -> tuple[jax.Array, Metrics]:
    """The training loss of one batch, plus every auxiliary loss the model sowed.

    `batch` is laid out as `batch_shape` says (`split_batch` takes it apart); for MLM only masked positions count.
    The vocab projection is fused into the loss (`lm_head_loss`); `loss_chunks` splits it along the sequence.
    """
    cfg = model.config
    inputs, targets, weights = split_batch(cfg, batch)
    deterministic = rng is None
    features, extra = model.apply(
        {"params": params},
        inputs,
        deterministic=deterministic,
        rngs=None if deterministic else {"dropout": rng},
        mutable=["losses"],
        method=GPTNeo.features,
    )
    head = output_embedding(cfg, params)
    cpu_matmuls = kernels_for(cfg.attention_impl, cfg.precision).CPU_MATMULS
    loss, (ce, z) = lm_head_loss(
        features, head, targets, weights, z_coef=cfg.z_loss, chunks=loss_chunks, cpu_matmuls=cpu_matmuls
    )
    aux = z + total_aux_loss(extra.get("losses", {}))  # z-loss, plus the MoE balance losses the model sowed
    return loss + total_aux_loss(extra.get("losses", {})), {"ce_loss": ce, "aux_loss": aux}


def build_train_step(
    model: GPTNeo,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    layout: StateLayout,
    batch_sharding: NamedSharding,
    mesh: Mesh,
    rules: Any,
    micro_batches: int = 1,
    seed: int = 0,
    loss_chunks: int = 1,
) -> Callable[[State, jax.Array], tuple[State, Metrics]]:
    """A jitted `step(state, batch) -> (state, metrics)`.

    With `micro_batches > 1` the batch is split along its first axis and gradients are averaged over a `lax.scan`,
    which equals the full-batch gradient (equal-sized micro-batches, mean losses) at a fraction of the activations.
    Dropout keys are a pure function of (seed, step), so a resumed run draws the same masks.
    """
    base_key = jax.random.key(seed + 1)
    grad_fn = jax.value_and_grad(lambda p, b, r: loss_fn(model, p, b, r, loss_chunks), has_aux=True)

    def step(state: State, batch: jax.Array) -> tuple[State, Metrics]:
        params = state["params"]
        rng = jax.random.fold_in(base_key, state["step"])
        if micro_batches == 1:
            (loss, parts), grads = grad_fn(params, batch, rng)
        else:
            # Interleave rather than slice, so every replica keeps feeding its own rows to every micro-batch.
            mbs = batch.reshape(batch.shape[0] // micro_batches, micro_batches, *batch.shape[1:]).swapaxes(0, 1)

            def accumulate(carry: Any, xs: tuple[jax.Array, jax.Array]) -> tuple[Any, None]:
                mb, i = xs
                (mb_loss, mb_parts), mb_grads = grad_fn(params, mb, jax.random.fold_in(rng, i))
                return jax.tree.map(jnp.add, carry, (mb_loss, mb_parts, mb_grads)), None

            zeros = jax.tree.map(jnp.zeros_like, (jnp.zeros(()), {k: jnp.zeros(()) for k in _PARTS}, params))
            (loss, parts, grads), _ = jax.lax.scan(accumulate, zeros, (mbs, jnp.arange(micro_batches)))
            loss, parts, grads = jax.tree.map(lambda x: x / micro_batches, (loss, parts, grads))
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_state = {"step": state["step"] + 1, "params": optax.apply_updates(params, updates), "opt_state": opt_state}
        metrics = {"loss": loss, "lr": schedule(state["step"]), "grad_norm": optax.tree.norm(grads), **parts}
        return new_state, metrics

    jitted = jax.jit(
        step,
        in_shardings=(layout.shardings, batch_sharding),
        out_shardings=(layout.shardings, None),
        donate_argnums=0,
        compiler_options=compiler_options(mesh),
    )

    def run(state: State, batch: jax.Array) -> tuple[State, Metrics]:
        with placement(mesh, rules):
            return jitted(state, batch)

    run.jitted = jitted  # type: ignore[attr-defined]  # for AOT lowering (dry runs, layout search)
    return run


_PARTS = ("ce_loss", "aux_loss")


def compiler_options(mesh: Mesh) -> dict[str, Any] | None:
    """XLA options for the train step on `mesh`'s platform. On CPUs: 512-bit vectors where the CPU has them (LLVM
    otherwise prefers 256): the benchmark model's step 2-3% faster on an AVX-512 Intel Xeon, unchanged on an AMD
    EPYC (benchmarks/README.md); a CPU without AVX-512 ignores it. Elsewhere XLA's defaults."""
    if any(d.platform != "cpu" for d in np.asarray(mesh.devices).flat):
        return None
    return {"xla_cpu_prefer_vector_width": 512}


def build_eval_step(
    model: GPTNeo, layout: StateLayout, batch_sharding: NamedSharding, mesh: Mesh, rules: Any, loss_chunks: int = 1
) -> Callable[[Any, jax.Array], jax.Array]:
    """A jitted `eval(params, batch) -> mean cross-entropy` (no dropout, no auxiliary terms)."""

    def evaluate(params: Any, batch: jax.Array) -> jax.Array:
        return loss_fn(model, params, batch, None, loss_chunks)[1]["ce_loss"]

    jitted = jax.jit(evaluate, in_shardings=(layout.shardings["params"], batch_sharding))

    def run(params: Any, batch: jax.Array) -> jax.Array:
        with placement(mesh, rules):
            return jitted(params, batch)

    return run

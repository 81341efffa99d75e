"""Everything a training run assembles before its first step: mesh, layout rules, model, optimizer, state, data.

`neo train`, `neo train --dry-run`, `neo eval` and the layout search all start from a Session, so the state they
compile is the same one training runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from neo.config import NeoConfig
from neo.data import pipeline
from neo.data.card import DatasetCard
from neo.errors import CheckpointError, ConfigError
from neo.model import kernels
from neo.model.objectives import auto_loss_chunks
from neo.model.transformer import GPTNeo
from neo.parallel import layout as layout_lib
from neo.parallel import mesh as mesh_lib
from neo.parallel.flops import peak_flops_per_device
from neo.train import step as step_lib
from neo.train.checkpoint import Checkpoints
from neo.train.optimizer import build_optimizer, learning_rate_schedule
from neo.train.state import State, StateLayout, init_state, state_layout


@dataclass
class Session:
    cfg: NeoConfig
    mesh: Mesh
    rules: Any
    model: GPTNeo
    tx: optax.GradientTransformation
    layout: StateLayout
    batch_sharding: NamedSharding
    micro_batches: int
    loss_chunks: int  # train.loss_chunks, resolved (`auto_loss_chunks` when 0)
    n_params: int
    peak_flops: float
    data: pipeline.TrainData | None  # the training datasets, checked and opened (None for dry runs)

    @property
    def card(self) -> DatasetCard | None:
        """The training dataset's card (None for dry runs)."""
        return self.data.card if self.data is not None else None

    @property
    def bytes_per_token(self) -> float | None:
        return self.card.bytes_per_token if self.card is not None and self.card.bytes_per_token else None

    def __post_init__(self) -> None:
        schedule = learning_rate_schedule(self.cfg.optimizer, self.cfg.train.steps)
        self.train_step = step_lib.build_train_step(
            self.model,
            self.tx,
            schedule,
            self.layout,
            self.batch_sharding,
            self.mesh,
            self.rules,
            micro_batches=self.micro_batches,
            seed=self.cfg.train.seed,
            loss_chunks=self.loss_chunks,
        )
        self.eval_step = step_lib.build_eval_step(
            self.model, self.layout, self.batch_sharding, self.mesh, self.rules, self.loss_chunks
        )

    # -- state ---------------------------------------------------------------------------------------------------
    def fresh_state(self) -> State:
        return init_state(self.model, self.tx, self.layout, self.cfg.train.seed, self.mesh, self.rules)

    def initial_state(
        self, ckpts: Checkpoints, warn: Callable[[str], None] = logging.getLogger("neo").warning
    ) -> tuple[State, int]:
        """Resume from the newest checkpoint that reads back; a params-only checkpoint (converted model) starts
        fine-tuning from its weights with a fresh optimizer at step 0.

        A committed checkpoint damaged afterwards (truncated or deleted files: a full disk, a bad copy) is skipped
        with a warning naming it, and removed so that training can write that step again; when none reads back, the
        run stops with a CheckpointError rather than silently starting afresh.
        """
        steps = ckpts.all_steps()
        if not steps:
            return self.fresh_state(), 0
        for step in steps:
            try:
                return self._restore(ckpts, step)
            except CheckpointError:
                raise  # the run's own settings do not match: the user's to fix, not a damaged file
            except Exception as exc:  # orbax/tensorstore report damage as assorted errors
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                warn(f"checkpoint {step} cannot be read ({reason}); skipped and removed, resuming from an older one")
                ckpts.delete(step)
        raise CheckpointError(
            f"no checkpoint in {ckpts.manager.directory} reads back (steps {', '.join(map(str, steps))} are damaged); "
            "restore them from a copy, or pass a new --run-dir to start afresh"
        )

    def _restore(self, ckpts: Checkpoints, step: int) -> tuple[State, int]:
        meta = ckpts.meta(step)
        if meta.get("params_only"):
            params = ckpts.restore_params(step, self.layout.abstract["params"])
            with mesh_lib.placement(self.mesh, self.rules):
                opt_state = jax.jit(self.tx.init, out_shardings=self.layout.shardings["opt_state"])(params)
            step0 = jax.device_put(np.int32(0), self.layout.shardings["step"])
            return {"step": step0, "params": params, "opt_state": opt_state}, 0
        if meta.get("seed", self.cfg.train.seed) != self.cfg.train.seed:
            raise CheckpointError(
                f"the run was started with train.seed={meta['seed']}; resume with the same seed or a new --run-dir"
            )
        state, _ = ckpts.restore_state(step, self.layout.abstract)
        return state, step

    # -- data ----------------------------------------------------------------------------------------------------
    def global_batch(self, local: np.ndarray | pipeline.MlmBatch) -> jax.Array:
        """Assemble the global batch from each host's rows (one host: just a sharded device_put), laid out as the
        step takes it (`step.pack_batch`)."""
        local = step_lib.pack_batch(local)
        global_shape = (self.cfg.train.batch_size, *local.shape[1:])
        return jax.make_array_from_process_local_data(self.batch_sharding, local, global_shape)

    @property
    def batch_rows(self) -> range:
        """The rows of each global batch that this process's devices hold (all of them on one process)."""
        return process_rows(self.batch_sharding, self.cfg.train.batch_size)

    def train_batches(self, start_step: int) -> Iterator[np.ndarray | pipeline.MlmBatch]:
        common = {
            "n_ctx": self.cfg.model.n_ctx,
            "batch_size": self.cfg.train.batch_size,
            "seed": self.cfg.train.seed,
            "start_step": start_step,
            "rows": self.batch_rows,
            "data": self.data,
        }
        if self.cfg.model.mlm_training:
            mlm = pipeline.MlmOptions.from_model(self.cfg.model)
            return pipeline.mlm_train_batches(self.cfg.data, mlm=mlm, vocab_size=self.cfg.model.n_vocab, **common)
        return pipeline.train_batches(self.cfg.data, **common)

    def eval_batches(self) -> Iterator[np.ndarray | pipeline.MlmBatch] | None:
        if not self.cfg.train.eval_steps or not self.cfg.data.eval_dir:
            return None
        batches = pipeline.eval_batches(
            self.cfg.data,
            n_ctx=self.cfg.model.n_ctx,
            batch_size=self.cfg.train.batch_size,
            rows=self.batch_rows,
        )
        batches = (b for _, b in zip(range(self.cfg.train.eval_steps), batches, strict=False))
        if self.cfg.model.mlm_training:  # the same masks at every evaluation
            mlm = pipeline.MlmOptions.from_model(self.cfg.model)
            vocab = self.cfg.model.n_vocab
            return (
                pipeline.mask_tokens(b, mlm, vocab, np.random.default_rng([self.cfg.train.seed, i]))
                for i, b in enumerate(batches)
            )
        return batches


def process_rows(sharding: NamedSharding, batch_size: int) -> range:
    """The contiguous rows of a [batch_size, ...] array that this process's devices hold under `sharding`."""
    spans = {
        (index[0].start or 0, batch_size if index[0].stop is None else index[0].stop)
        for index in sharding.addressable_devices_indices_map((batch_size, 1)).values()
    }
    lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
    covered = np.zeros(batch_size, bool)
    for a, b in spans:
        covered[a:b] = True
    if not covered[lo:hi].all():
        raise ConfigError(
            f"process {jax.process_index()} holds rows of the batch that are not contiguous on mesh "
            f"{dict(sharding.mesh.shape)}; map batch to the leading mesh axes in mesh.layout (e.g. batch:x)"
        )
    return range(lo, hi)


def micro_batch_count(cfg: NeoConfig, replicas: int) -> int:
    """GPT-Neo's `tokens_per_mb_per_replica`: how many micro-batches each step's batch is split into."""
    per_replica = cfg.train.batch_size // replicas
    if not cfg.train.tokens_per_mb_per_replica:
        return 1
    mb_rows = max(cfg.train.tokens_per_mb_per_replica // cfg.model.n_ctx, 1)
    if per_replica % mb_rows:
        raise ConfigError(
            f"train.tokens_per_mb_per_replica={cfg.train.tokens_per_mb_per_replica} gives micro-batches of {mb_rows} "
            f"sequences, which do not divide the {per_replica} sequences per replica; pick a divisor"
        )
    return per_replica // mb_rows


def build_session(
    cfg: NeoConfig, run_dir: Path | None = None, devices: Any = None, mesh: Mesh | None = None, rules: Any = None
) -> Session:
    """Assemble mesh, rules, model, optimizer and state layout for `cfg` (no parameters allocated yet).

    `run_dir` given means "about to train": the data is checked too. `mesh`/`rules` given (the layout search)
    replace the ones `cfg.mesh` describes.
    """
    if mesh is None:
        mesh = mesh_lib.make_mesh(cfg.mesh, devices=devices)
    if rules is None:
        rules = layout_lib.layout_rules(cfg.mesh.layout, mesh.axis_names)
    # the kernels for the devices the step compiles for (a layout search's or dry run's TPU topology included):
    # `auto` resolves here, and a choice these devices cannot run fails now, in one line
    platform = kernels.platform_of(mesh.devices.flat[0])
    on_cpu = platform == "cpu"
    impl = kernels.resolve(cfg.model.attention_impl, platform, cfg.model.precision)
    model = GPTNeo(replace(cfg.model, attention_impl=impl))
    tx = build_optimizer(cfg.optimizer, cfg.train.steps)
    st_layout = state_layout(model, tx, mesh, rules)
    batch_spec = nn.logical_to_mesh_axes(("batch", None), rules)
    replicas = layout_lib.axis_ways("batch", rules, mesh.shape)
    if cfg.train.batch_size % replicas:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} is not divisible by the {replicas} data-parallel replicas "
            f"of mesh {dict(mesh.shape)}; use a multiple of {replicas}"
        )
    data = None
    if run_dir is not None:  # training: every data precondition is checked before the first step
        data = pipeline.check_data(cfg.data, n_ctx=cfg.model.n_ctx, vocab_size=cfg.model.n_vocab, seed=cfg.train.seed)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(st_layout.abstract["params"]))
    micro_batches = micro_batch_count(cfg, replicas)
    loss_chunks = cfg.train.loss_chunks
    if not loss_chunks:  # auto: CPU caches favour small chunks; accelerators keep one pass unless told otherwise
        rows = cfg.train.batch_size // (replicas * micro_batches)  # sequences per device and micro-batch
        loss_chunks = auto_loss_chunks(rows, cfg.model.n_ctx, cfg.model.n_vocab) if on_cpu else 1
    return Session(
        cfg=cfg,
        mesh=mesh,
        rules=rules,
        model=model,
        tx=tx,
        layout=st_layout,
        batch_sharding=NamedSharding(mesh, batch_spec),
        micro_batches=micro_batches,
        loss_chunks=loss_chunks,
        n_params=n_params,
        peak_flops=peak_flops_per_device(cfg.mesh) if run_dir is not None else cfg.mesh.peak_flops_per_device,
        data=data,
    )

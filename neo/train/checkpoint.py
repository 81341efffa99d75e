"""Checkpoints in a run directory, written by orbax.

Layout: `RUN_DIR/checkpoints/<step>/{params,opt_state,meta}`. Orbax writes each step to a temporary directory
(`<step>.orbax-checkpoint-tmp-*`) and renames it when complete; only renamed steps count, and old steps are pruned
only after the new one is committed, so a crash mid-save (also of a background, asynchronous save) leaves the previous
checkpoint usable. A writer removes the temporary directories an earlier crash left behind. Parameters are a separate
item so that sampling, evaluation and conversion load them without the optimizer state. No pickle on the load path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax

from neo import storage
from neo.errors import CheckpointError, StorageError

ITEMS = ("params", "opt_state", "meta")


def checkpoint_dir(run_dir: str | Path) -> str:
    """`RUN_DIR/checkpoints`: absolute when local (orbax wants that), the URL as is in an object store."""
    return storage.join(run_dir if storage.is_remote(run_dir) else os.path.abspath(run_dir), "checkpoints")


class Checkpoints:
    """Save and restore the train state of one run directory."""

    def __init__(self, run_dir: str | Path, keep: int = 3, async_save: bool = True, read_only: bool = False) -> None:
        import orbax.checkpoint as ocp  # here, not at the top: a `neo sample` served from the decoding cache skips it

        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,  # half-written steps of a crashed run: never resumed from
        )
        self.manager = ocp.CheckpointManager(checkpoint_dir(run_dir), options=options, item_names=ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Committed steps, newest first."""
        return sorted(self.manager.all_steps(), reverse=True)

    def delete(self, step: int) -> None:
        self.manager.delete(step)

    def save(self, step: int, state: dict[str, Any] | None, meta: dict[str, Any], params: Any = None) -> None:
        """Save `state` (params + optimizer), or `params` alone (a converted or exported model)."""
        import orbax.checkpoint as ocp

        items: dict[str, Any] = {"meta": ocp.args.JsonSave({**meta, "step": step, "params_only": state is None})}
        items["params"] = ocp.args.StandardSave(state["params"] if state is not None else params)
        if state is not None:
            items["opt_state"] = ocp.args.StandardSave(state["opt_state"])
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def meta(self, step: int) -> dict[str, Any]:
        import orbax.checkpoint as ocp

        return dict(self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Parameters only, placed as `abstract_params` says (ShapeDtypeStructs with shardings)."""
        import orbax.checkpoint as ocp

        restored = self.manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params)))
        return restored["params"]

    def restore_state(self, step: int, abstract_state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The full train state in its shardings, and the checkpoint's metadata."""
        import orbax.checkpoint as ocp

        meta = self.meta(step)
        if meta.get("params_only"):
            raise CheckpointError("params-only checkpoint")  # callers fall back to fresh optimizer state
        args = ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_state["params"]),
            opt_state=ocp.args.StandardRestore(abstract_state["opt_state"]),
        )
        try:
            restored = self.manager.restore(step, args=args)
        except ValueError as exc:
            if "do not match" not in str(exc):
                raise
            raise CheckpointError(
                f"the checkpoint at step {step} was written with other optimizer or model settings; resume with "
                "the run's own config (see config.yaml in the run directory) or start a new --run-dir"
            ) from None
        step_array = jax.device_put(jax.numpy.asarray(meta["step"], jax.numpy.int32), abstract_state["step"].sharding)
        state = {"step": step_array, "params": restored["params"], "opt_state": restored["opt_state"]}
        return state, meta

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def load_snapshot(run_dir: str | os.PathLike[str], overrides: list[str] | None = None) -> Any:
    """The config snapshot `RUN_DIR/config.yaml` (any location) as a NeoConfig, with `key=value` overrides."""
    from neo.config import load

    with storage.local_file(storage.join(run_dir, "config.yaml")) as local:
        return load(local, overrides)


def load_run_config(run_dir: str | os.PathLike[str], overrides: list[str] | None = None) -> Any:
    """`load_snapshot` of a directory that must be a run: without config.yaml it is a CheckpointError saying so."""
    if not storage.isfile(storage.join(run_dir, "config.yaml")):
        raise CheckpointError(f"{run_dir} is not a run directory (no config.yaml); pass a directory from `neo train`")
    return load_snapshot(run_dir, overrides)


def latest_step(run_dir: str | os.PathLike[str]) -> int:
    """The newest committed step of a run, or a CheckpointError saying to train it first."""
    ckpts = Checkpoints(run_dir, read_only=True, async_save=False)
    try:
        step = ckpts.latest_step()
    finally:
        ckpts.close()
    if step is None:
        raise CheckpointError(f"{run_dir} has no checkpoint yet; train it first (neo train --run-dir {run_dir})")
    return step


def newest_local_step(run_dir: str | os.PathLike[str]) -> int | None:
    """The newest step of a local run read from its directory names, without orbax: a step's directory gets its bare
    number only when orbax renames it complete (see above). None for an object-store run (orbax marks completion
    there differently) or a run without checkpoints."""
    if storage.is_remote(run_dir):
        return None
    try:
        steps = [int(name) for name in os.listdir(checkpoint_dir(run_dir)) if name.isdigit()]
    except OSError:
        return None
    return max(steps, default=None)


def checkpoint_identity(run_dir: str | os.PathLike[str], step: int) -> str | None:
    """A string that changes whenever checkpoint `step` of `run_dir` is rewritten: its location and orbax's commit
    record (which holds the commit time); None when there is no record to go by."""
    run_dir = os.fspath(run_dir)
    location = run_dir if storage.is_remote(run_dir) else os.path.realpath(run_dir)
    record = storage.join(checkpoint_dir(run_dir), str(step), "_CHECKPOINT_METADATA")
    try:
        return f"{location}\n{step}\n{storage.read_text(record)}"
    except (OSError, StorageError):
        return None


def restore_run_params(
    run_dir: str | os.PathLike[str], abstract_params: Any, step: int | None = None
) -> tuple[Any, int]:
    """(parameters, step) of the run's checkpoint `step` (default: the latest), placed as `abstract_params` says;
    no optimizer state is read."""
    step = latest_step(run_dir) if step is None else step
    ckpts = Checkpoints(run_dir, read_only=True, async_save=False)
    try:
        return ckpts.restore_params(step, abstract_params), step
    finally:
        ckpts.close()


def on_one_device(model: Any) -> Any:
    """The abstract parameters of `model` (a ModelConfig), every one placed on the default device."""
    import flax.linen as nn
    from jax.sharding import SingleDeviceSharding

    from neo.model.params import abstract_variables

    device = SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
        nn.meta.unbox(abstract_variables(model)["params"]),
    )


def load_run(run_dir: str | Path, step: int | None = None) -> tuple[Any, Any, int]:
    """(config, params, step) of a run directory, params only (no optimizer state), on the default device.

    Works for runs written by `neo train` and by `neo convert from-hf`.
    """
    run_dir = os.fspath(run_dir)
    cfg = load_run_config(run_dir)
    params, step = restore_run_params(run_dir, on_one_device(cfg.model), step)
    return cfg, params, step

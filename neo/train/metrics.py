"""Throughput and MFU accounting, and the run's metric sinks (`train.trackers`: metrics.jsonl, TensorBoard, W&B)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2

from neo import storage
from neo.data.tfrecord import frame
from neo.errors import ConfigError
from neo.model.config import ModelConfig


def flops_per_token(cfg: ModelConfig, n_params: int) -> float:
    """Training FLOPs per token: 6N for the matmuls (forward + backward) plus the attention scores and values.

    The attention term is 12 · n_embd · (keys each query sees) per layer (PaLM's 6N + 12·L·H·Q·T, with T the
    context a layer attends over: the window for local layers, none for `none` layers).
    """
    attention = 0.0
    for kind in cfg.layer_types():
        if kind in ("global", "linear"):
            attention += 12 * cfg.n_embd * cfg.n_ctx
        elif kind == "local":
            attention += 12 * cfg.n_embd * min(cfg.window_size, cfg.n_ctx)
    return 6.0 * n_params + attention


_WRITERS = itertools.count()  # tells apart the event files of writers opened in one process in the same second


class MetricsWriter:
    """The run's metric sinks, as `train.trackers` names them: `metrics.jsonl` (one JSON object per logged step),
    TensorBoard scalars, and Weights & Biases.

    Event files are TFRecords of `Event` protos, framed by `neo.data.tfrecord` (no TensorFlow import). A local run
    directory gets each row appended at once. In an object store (no append) the rows are kept in memory and the
    whole `metrics.jsonl` object rewritten, and the event file (written to a local temporary directory) uploaded, on
    `flush()`: at most every `upload_every_s` seconds from `write`, and whenever the loop saves a checkpoint, so a
    resumed run finds every row up to its checkpoint.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        enabled: bool = True,
        upload_every_s: float = 30.0,
        trackers: Sequence[str] = ("jsonl", "tensorboard"),
        wandb_project: str = "neo",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.enabled = enabled
        self.jsonl = enabled and "jsonl" in trackers
        self.path = storage.join(run_dir, "metrics.jsonl")
        self.remote = storage.is_remote(run_dir)
        self.upload_every_s = upload_every_s
        self._rows: list[str] = []  # remote: every line of the object
        self._dirty = False
        self._last_upload = time.monotonic()
        self._events: Any = None
        self._stage: tempfile.TemporaryDirectory[str] | None = None
        self._wandb = WandbRun(run_dir, wandb_project, config or {}) if enabled and "wandb" in trackers else None
        if self.jsonl and self.remote and storage.exists(self.path):
            self._rows = storage.read_text(self.path).splitlines(keepends=True)
        if not enabled or "tensorboard" not in trackers:
            return
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{next(_WRITERS)}.neo"
        self._events_url = storage.join(run_dir, "tensorboard", name)
        if self.remote:
            self._stage = tempfile.TemporaryDirectory(prefix="neo-tensorboard-")
            self._events_local = os.path.join(self._stage.name, name)
        else:
            storage.makedirs(storage.join(run_dir, "tensorboard"))
            self._events_local = self._events_url
        self._events = open(self._events_local, "ab")  # noqa: SIM115 - kept open for the run
        self._event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _event(self, event: Any) -> None:
        self._events.write(frame(event.SerializeToString()))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if not isinstance(v, int | str) else v) for k, v in row.items()}
        if self.jsonl:
            line = json.dumps(clean) + "\n"
            if self.remote:
                self._rows.append(line)
                self._dirty = True
            else:
                with open(self.path, "a") as f:
                    f.write(line)
        scalars = {k: v for k, v in clean.items() if k != "step" and isinstance(v, float) and math.isfinite(v)}
        if self._events is not None:
            values = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
            self._event(
                event_pb2.Event(wall_time=time.time(), step=int(row["step"]), summary=summary_pb2.Summary(value=values))
            )
            self._events.flush()
        if self._wandb is not None:
            self._wandb.log(int(row["step"]), scalars)
        if self.remote and time.monotonic() - self._last_upload >= self.upload_every_s:
            self.flush()

    def flush(self) -> None:
        """Make everything written so far visible in the run directory."""
        if self._events is not None:
            self._events.flush()
        if self.remote:
            if self._dirty:
                storage.write_atomic(self.path, "".join(self._rows))
                self._dirty = False
            if self._events is not None:
                storage.copy(self._events_local, self._events_url)
            self._last_upload = time.monotonic()

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows past the checkpoint we restart from, so metrics.jsonl reads like one clean run (and a
        row torn by a full disk or a kill mid-write)."""
        if not self.jsonl:
            return
        if self.remote:
            lines = self._rows
        elif os.path.exists(self.path):
            lines = storage.read_text(self.path).splitlines(keepends=True)
        else:
            return
        kept = [line for line in lines if (row_step := _step_of(line)) is not None and row_step <= step]
        if kept == lines:
            return
        if self.remote:
            self._rows = kept
        storage.write_atomic(self.path, "".join(kept))

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        if not self.enabled:
            return
        self.flush()
        if self._events is not None:
            self._events.close()
            self._events = None
        if self._stage is not None:
            self._stage.cleanup()
            self._stage = None


def _step_of(line: str) -> int | None:
    """A metrics row's step, or None for a line that is not a whole row."""
    try:
        return int(json.loads(line)["step"]) if line.endswith("\n") else None
    except (ValueError, KeyError, TypeError):
        return None


class WandbRun:
    """One Weights & Biases run per run directory: its id is derived from the directory, so a resumed `neo train`
    continues the same W&B run (rows at steps W&B has already seen are dropped by W&B, with a warning).

    A local run directory keeps W&B's own files under it (`wandb/`); with WANDB_MODE=offline they are the whole
    record, uploaded later by `wandb sync`.
    """

    def __init__(self, run_dir: str | os.PathLike[str], project: str, config: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise ConfigError(
                "train.trackers includes wandb but the wandb package is not installed; "
                "pip install 'neo[wandb]' (or drop wandb from train.trackers)"
            ) from exc
        run_dir = os.fspath(run_dir)
        name = os.path.basename(run_dir.rstrip("/")) or "neo"
        local = None if storage.is_remote(run_dir) else os.path.abspath(run_dir)
        run_id = f"{name}-{hashlib.sha1((local or run_dir).encode()).hexdigest()[:8]}"
        self._run = wandb.init(
            project=project, name=name, id=run_id, resume="allow", dir=local, config=config, reinit="create_new"
        )

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self._run.log(scalars, step=step)

    def finish(self) -> None:
        self._run.finish()

"""Throughput and MFU accounting, and the run's metric sinks (metrics.jsonl and TensorBoard)."""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import tempfile
import time
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2

from neo import storage
from neo.data.tfrecord import frame
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
    """The run's metric sinks: `metrics.jsonl` (one JSON object per logged step) and TensorBoard scalars.

    Event files are TFRecords of `Event` protos, framed by `neo.data.tfrecord` (no TensorFlow import). A local run
    directory gets each row appended at once. In an object store (no append) the rows are kept in memory and the
    whole `metrics.jsonl` object rewritten, and the event file (written to a local temporary directory) uploaded, on
    `flush()`: at most every `upload_every_s` seconds from `write`, and whenever the loop saves a checkpoint, so a
    resumed run finds every row up to its checkpoint.
    """

    def __init__(self, run_dir: str | os.PathLike[str], enabled: bool = True, upload_every_s: float = 30.0) -> None:
        self.enabled = enabled
        self.path = storage.join(run_dir, "metrics.jsonl")
        self.remote = storage.is_remote(run_dir)
        self.upload_every_s = upload_every_s
        self._rows: list[str] = []  # remote: every line of the object
        self._dirty = False
        self._last_upload = time.monotonic()
        self._events: Any = None
        self._stage: tempfile.TemporaryDirectory[str] | None = None
        if not enabled:
            return
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{next(_WRITERS)}.neo"
        self._events_url = storage.join(run_dir, "tensorboard", name)
        if self.remote:
            if storage.exists(self.path):
                self._rows = storage.read_text(self.path).splitlines(keepends=True)
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
        line = json.dumps(clean) + "\n"
        if self.remote:
            self._rows.append(line)
            self._dirty = True
        else:
            with open(self.path, "a") as f:
                f.write(line)
        values = [
            summary_pb2.Summary.Value(tag=k, simple_value=v)
            for k, v in clean.items()
            if k != "step" and isinstance(v, float) and math.isfinite(v)
        ]
        self._event(
            event_pb2.Event(wall_time=time.time(), step=int(row["step"]), summary=summary_pb2.Summary(value=values))
        )
        self._events.flush()
        if self.remote and time.monotonic() - self._last_upload >= self.upload_every_s:
            self.flush()

    def flush(self) -> None:
        """Make everything written so far visible in the run directory."""
        if not self.enabled:
            return
        self._events.flush()
        if self.remote:
            if self._dirty:
                storage.write_atomic(self.path, "".join(self._rows))
                self._dirty = False
            storage.copy(self._events_local, self._events_url)
            self._last_upload = time.monotonic()

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows past the checkpoint we restart from, so metrics.jsonl reads like one clean run."""
        if not self.enabled:
            return
        if self.remote:
            lines = self._rows
        elif os.path.exists(self.path):
            lines = storage.read_text(self.path).splitlines(keepends=True)
        else:
            return
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        if kept == lines:
            return
        if self.remote:
            self._rows = kept
        storage.write_atomic(self.path, "".join(kept))

    def close(self) -> None:
        if self._events is None:
            return
        self.flush()
        self._events.close()
        self._events = None
        if self._stage is not None:
            self._stage.cleanup()

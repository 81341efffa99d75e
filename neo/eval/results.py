"""Task results into the run directory: lm-eval's results as JSON, and every metric as a TensorBoard scalar.

`RUN/eval/harness-<UTC time>.json` holds lm-eval's whole results object (per-task metrics with stderr, task configs,
versions, n-shot) plus neo's flat rows and the checkpoint step. The scalars go to a new event file in
`RUN/tensorboard/` at that step, tagged `harness/<task>/<metric>`, beside the training curves. metrics.jsonl (one
row per training step) is left alone.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable
from typing import Any

from neo import storage


def json_safe(results: dict[str, Any], default: Callable[[Any], Any]) -> dict[str, Any]:
    """lm-eval's results hold a few objects JSON cannot (functions in task configs): a JSON round trip."""
    return json.loads(json.dumps(results, default=default))


def checkpoint_step(run_dir: str) -> int:
    """The step of the run's latest checkpoint (0 for a HF directory or a run converted from one)."""
    if not storage.isfile(storage.join(run_dir, "config.yaml")):
        return 0
    from neo.train.checkpoint import Checkpoints

    ckpts = Checkpoints(run_dir, read_only=True, async_save=False)
    try:
        return int(ckpts.latest_step() or 0)
    finally:
        ckpts.close()


def write_scalars(run_dir: str, step: int, scalars: dict[str, float]) -> str:
    """One TensorBoard event file with `scalars` at `step` in RUN/tensorboard/; returns its path."""
    from tensorboard.compat.proto import event_pb2, summary_pb2

    from neo.data.tfrecord import frame

    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.harness.neo"
    url = storage.join(run_dir, "tensorboard", name)
    values = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in scalars.items() if math.isfinite(v)]
    events = [
        event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"),
        event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=values)),
    ]
    data = b"".join(frame(e.SerializeToString()) for e in events)
    if storage.is_remote(run_dir):
        with tempfile.TemporaryDirectory(prefix="neo-harness-") as stage:
            local = os.path.join(stage, name)
            with open(local, "wb") as f:
                f.write(data)
            storage.copy(local, url)
    else:
        storage.makedirs(storage.join(run_dir, "tensorboard"))
        with open(url, "wb") as f:
            f.write(data)
    return url


def save_results(run_dir: str, results: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Write the JSON and the TensorBoard scalars; returns the JSON's path."""
    step = checkpoint_step(run_dir)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = storage.join(run_dir, "eval", f"harness-{stamp}.json")
    if not storage.is_remote(run_dir):
        storage.makedirs(storage.join(run_dir, "eval"))
    storage.write_atomic(path, json.dumps({"step": step, "rows": rows, **results}, indent=2, ensure_ascii=False))
    write_scalars(run_dir, step, {f"harness/{r['task']}/{r['metric']}": r["value"] for r in rows})
    return path

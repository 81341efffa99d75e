"""`train.trackers` (metrics.jsonl, TensorBoard, W&B offline) and `train.profile_steps` (a jax.profiler trace)."""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from neo.cli.app import run
from neo.config import compose
from neo.train.loop import train


def wandb_history(run_file: Path) -> list[dict[str, float]]:
    """The history rows of an offline W&B run file: a 7-byte W&B header, then LevelDB-log records (32 KiB blocks,
    each record a 7-byte header and a piece of a protobuf `Record`)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, piece, rows = run_file.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        piece += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(piece)
            piece = b""
            if record.WhichOneof("record_type") == "history":
                items = record.history.item
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
    return rows


def test_jsonl_and_wandb_offline_without_tensorboard_and_a_profile_of_two_steps(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    overrides = ["train.steps=4", "train.eval_steps=0", "train.trackers=[jsonl,wandb]", "train.profile_steps=[2,3]"]
    train(compose(tiny_overrides(tiny_dataset, run_dir, *overrides)), run_dir)

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert not (run_dir / "tensorboard").exists()  # not asked for

    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    history = wandb_history(run_file)
    assert [int(h["_step"]) for h in history] == [1, 2, 3, 4]
    assert [h["loss"] for h in history] == pytest.approx([r["loss"] for r in rows])
    assert {"lr", "tokens_per_sec", "mfu"} <= set(history[-1])

    (trace,) = run_dir.glob("profile/plugins/profile/*/perfetto_trace.json.gz")
    assert list(trace.parent.glob("*.xplane.pb"))  # TensorBoard's profile tab reads these
    events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    executed = [e for e in events if e.get("name") == "CommonPjRtLoadedExecutable::Execute (jit_step)"]
    assert len(executed) == 2  # steps 2 and 3 ran in it, and only they


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.trackers=[jsonl,mlflow]", "unknown tracker 'mlflow'"),
        ("train.profile_steps=[5,2]", "train.profile_steps must be [first, last]"),
        ("train.profile_steps=[3]", "train.profile_steps must be [first, last]"),
    ],
)
def test_bad_tracker_settings_are_one_line(override: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config", "show", override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1

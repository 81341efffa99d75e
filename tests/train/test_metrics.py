"""Metric sinks: metrics.jsonl rows and TensorBoard event files that TensorBoard reads, locally and in a bucket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neo import storage
from neo.train.metrics import MetricsWriter


def _scalars(event_file: str) -> dict[tuple[int, str], float]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    with storage.local_file(event_file) as local:
        events = list(EventFileLoader(local).Load())
    assert events[0].file_version == "brain.Event:2"
    out = {}
    for e in events[1:]:
        for v in e.summary.value:
            value = v.simple_value if v.HasField("simple_value") else float(v.tensor.float_val[0])
            out[(e.step, v.tag)] = value
    return out


@pytest.fixture(params=["local", "gcs"])
def run_dir(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "run")
    return f"{request.getfixturevalue('gcs_emulator').bucket_url}/metrics/{request.node.name[-4:-1]}"


def test_rows_events_flush_and_truncate(run_dir: str) -> None:
    writer = MetricsWriter(run_dir, upload_every_s=3600)
    for step in (1, 2, 3):
        writer.write({"step": step, "loss": 1.0 / step, "lr": 0.1, "tokens_per_sec": 100})
    writer.flush()
    rows = [json.loads(r) for r in storage.read_text(storage.join(run_dir, "metrics.jsonl")).splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[1]["loss"] == 0.5
    writer.close()
    (events,) = storage.listdir(storage.join(run_dir, "tensorboard"))
    scalars = _scalars(events)
    assert scalars[(2, "loss")] == pytest.approx(0.5) and scalars[(3, "lr")] == pytest.approx(0.1)

    resumed = MetricsWriter(run_dir, upload_every_s=3600)  # a resume from step 2
    resumed.truncate_after(2)
    resumed.write({"step": 3, "loss": 0.25})
    resumed.close()
    rows = [json.loads(r) for r in storage.read_text(storage.join(run_dir, "metrics.jsonl")).splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 0.5), (3, 0.25)]

"""A full disk (simulated with RLIMIT_FSIZE) while encoding or checkpointing: one line, exit 2, nothing lost, and the
same command completes once there is room."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.train.test_loop import losses

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE as a stand-in for a full disk")


def _neo(args: list[str], tmp_path: Path, max_file_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        if max_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    env = {
        **os.environ,
        "NEO_CACHE_DIR": str(tmp_path / "cache"),  # a compile cache written under the limit stays in this test
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    }
    return subprocess.run(
        [sys.executable, "-m", "neo.cli.app", *args], env=env, preexec_fn=limit, capture_output=True, text=True
    )


def _one_line_disk_error(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "a file-size limit was hit" in proc.stderr and "rerun the same command" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_encode_on_a_full_disk_keeps_finished_shards_and_the_rerun_completes(
    tiny_dataset: dict[str, Path], tmp_path: Path
) -> None:
    from tests.conftest import _documents

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, doc in enumerate(_documents(10, 0) + [" ".join(_documents(8, i)) for i in range(10)]):
        (corpus / f"{i:03d}.txt").write_text(doc)  # ten short documents, then ten long ones
    tokenizer = str(tiny_dataset["tokenizer"])  # ~8 KB: it fits under the limit, the long documents' shard not
    args = ["data", "encode", str(corpus), "--tokenizer", tokenizer, "--files-per", "10"]
    full = _neo([*args, "--out", str(tmp_path / "ds")], tmp_path, max_file_bytes=12_000)
    _one_line_disk_error(full)
    kept = sorted(p.name for p in (tmp_path / "ds").glob("*.tfrecords"))
    assert kept == ["data_00000.tfrecords"]
    assert _neo([*args, "--out", str(tmp_path / "ds")], tmp_path).returncode == 0
    assert _neo([*args, "--out", str(tmp_path / "clean")], tmp_path).returncode == 0
    for shard in kept:  # shards written before the disk filled are the clean run's, byte for byte
        assert (tmp_path / "ds" / shard).read_bytes() == (tmp_path / "clean" / shard).read_bytes()
    names = sorted(p.name for p in (tmp_path / "clean").glob("*.tfrecords"))
    assert sorted(p.name for p in (tmp_path / "ds").glob("*.tfrecords")) == names
    for shard in names:
        assert (tmp_path / "ds" / shard).read_bytes() == (tmp_path / "clean" / shard).read_bytes()


@pytest.mark.slow  # over a minute on 2 cores: the default suite stays under 15 minutes
def test_checkpoint_on_a_full_disk_keeps_the_previous_one_and_the_rerun_resumes_exactly(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable
) -> None:
    straight, run_dir = tmp_path / "straight", tmp_path / "run"
    extra = ["train.checkpoint_every=2", "train.eval_steps=0"]
    assert _neo(["train", *tiny_overrides(tiny_dataset, straight, "train.steps=4", *extra)], tmp_path).returncode == 0
    assert _neo(["train", *tiny_overrides(tiny_dataset, run_dir, "train.steps=2", *extra)], tmp_path).returncode == 0
    full = _neo(["train", *tiny_overrides(tiny_dataset, run_dir, "train.steps=4", *extra)], tmp_path, 100_000)
    _one_line_disk_error(full)
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2]  # the half-written step 4 is not committed; step 2 is intact
    again = _neo(["train", *tiny_overrides(tiny_dataset, run_dir, "train.steps=4", *extra)], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert losses(run_dir) == losses(straight)


@pytest.mark.slow  # four training processes: ~1 minute on 2 cores
def test_metrics_on_a_full_disk_keep_the_checkpoint_and_the_rerun_logs_every_step(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable
) -> None:
    import json

    straight, run_dir = tmp_path / "straight", tmp_path / "run"
    extra = ["train.checkpoint_every=2", "train.eval_steps=0", "train.trackers=[jsonl]"]
    assert _neo(["train", *tiny_overrides(tiny_dataset, straight, "train.steps=4", *extra)], tmp_path).returncode == 0
    assert _neo(["train", *tiny_overrides(tiny_dataset, run_dir, "train.steps=2", *extra)], tmp_path).returncode == 0
    limit = 4_000_000  # above every checkpoint file of this model, so only metrics.jsonl can reach it
    with (run_dir / "metrics.jsonl").open("a") as f:  # a long run's metrics, nearly at the limit
        f.write(
            json.dumps({"step": 1, "note": "x" * (limit - (run_dir / "metrics.jsonl").stat().st_size - 200)}) + "\n"
        )
    full = _neo(["train", *tiny_overrides(tiny_dataset, run_dir, "train.steps=4", *extra)], tmp_path, limit)
    _one_line_disk_error(full)
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [2]
    again = _neo(["train", *tiny_overrides(tiny_dataset, run_dir, "train.steps=4", *extra)], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert losses(run_dir) == losses(straight)  # every step logged once, as in the run that had room

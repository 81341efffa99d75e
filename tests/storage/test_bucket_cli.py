"""The `neo` commands with their data and run directory in a Cloud Storage bucket (a local fake-gcs-server).

Commands run as subprocesses with the emulator's environment, so it is set before gcsfs/tensorstore are imported.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from neo import storage
from tests.conftest import GcsEmulator, _documents, _tiny_overrides

pytestmark = pytest.mark.multiprocess


def _neo(emulator: GcsEmulator, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    environ = {
        **os.environ,
        **emulator.env,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2]), environ.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, "-m", "neo.cli.app", *args],
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(emulator: GcsEmulator, *args: str, cwd: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = _neo(emulator, *args, cwd=cwd, **kw)
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def bucket_data(gcs_emulator: GcsEmulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A corpus uploaded to the bucket, a tokenizer trained from it and train/eval sets encoded, all in the bucket,
    by the CLI."""
    root = gcs_emulator.bucket_url
    for split, n, seed in (("train", 60, 0), ("eval", 8, 1)):  # the local tiny dataset's documents
        for i, doc in enumerate(_documents(n, seed)):
            storage.write_atomic(f"{root}/corpus/{split}/{i:03d}.txt", doc)
    cwd = tmp_path_factory.mktemp("bucket_cli")
    tok = f"{root}/tok"
    procs = [_neo(gcs_emulator, "tokenizer", "train", f"{root}/corpus/train", "--out", tok, "--vocab-size", "300",
                  "--min-frequency", "1", cwd=cwd)]  # fmt: skip
    assert procs[0].wait(timeout=300) == 0, procs[0].stderr.read() if procs[0].stderr else ""
    for split in ("train", "eval"):
        procs.append(_neo(gcs_emulator, "data", "encode", f"{root}/corpus/{split}/*.txt", "--out", f"{root}/{split}",
                          "--tokenizer", f"{tok}/tokenizer.json", "--name", split, cwd=cwd))  # fmt: skip
    for p in procs[1:]:
        assert p.wait(timeout=300) == 0, p.stderr.read() if p.stderr else ""
    assert os.listdir(cwd) == []  # nothing local, and never a `gs:` folder
    return {"train": f"{root}/train", "eval": f"{root}/eval", "tokenizer": f"{tok}/tokenizer.json", "cwd": str(cwd)}


def test_tokenizer_and_dataset_written_to_the_bucket(bucket_data: dict[str, str]) -> None:
    from neo.data.peek import peek_dataset

    report = peek_dataset(bucket_data["train"])
    assert report.ok, report.problems
    assert report.records == 60 and report.n_vocab == 300
    names = [storage.basename(p) for p in storage.listdir(bucket_data["train"])]
    assert [n for n in names if not n.startswith(".")] == [
        "dataset.yaml",
        "tokenizer.json",
        "train_00000.tfrecords",
    ]


def _overrides(data: dict[str, str], run_dir: str, *extra: str) -> list[str]:
    """The tiny run of tests/train, longer and checkpointed more often, with data and run directory in the bucket."""
    return _tiny_overrides(data, run_dir, "train.steps=12", "train.checkpoint_every=4", "train.eval_steps=1", *extra)


def _losses(run_dir: str) -> dict[int, float]:
    rows = [json.loads(line) for line in storage.read_text(storage.join(run_dir, "metrics.jsonl")).splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_run_in_the_bucket_survives_sigkill_and_resumes_bit_identical(
    gcs_emulator: GcsEmulator, bucket_data: dict[str, str]
) -> None:
    cwd = Path(bucket_data["cwd"])
    straight, killed = f"{gcs_emulator.bucket_url}/runs/straight", f"{gcs_emulator.bucket_url}/runs/killed"
    first = _neo(gcs_emulator, "train", *_overrides(bucket_data, straight), cwd=cwd)
    proc = _neo(gcs_emulator, "train", *_overrides(bucket_data, killed), cwd=cwd)
    deadline = time.time() + 240
    metrics = storage.join(killed, "metrics.jsonl")
    while not (storage.exists(metrics) and max(_losses(killed), default=0) >= 8):  # flushed when step 8 saves
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.time() < deadline, "no metrics in the bucket"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert first.wait(timeout=300) == 0, first.stderr.read() if first.stderr else ""
    again = _run(gcs_emulator, "train", *_overrides(bucket_data, killed), cwd=cwd)
    assert again.returncode == 0, again.stderr
    said = " ".join(again.stderr.split())  # rich wraps lines at the terminal width
    assert "starting at step 4" in said or "starting at step 8" in said, again.stderr
    rows = [json.loads(line) for line in storage.read_text(storage.join(killed, "metrics.jsonl")).splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 13))  # no row twice after the resume
    assert _losses(killed) == _losses(straight)
    assert sorted(_losses(straight)) == list(range(1, 13))
    for name in ("config.yaml", "tokenizer.json"):
        assert storage.isfile(storage.join(killed, name))
    events = storage.listdir(storage.join(killed, "tensorboard"))
    assert len(events) == 2 and all(storage.basename(e).startswith("events.out.tfevents.") for e in events)
    assert {storage.basename(p) for p in storage.listdir(storage.join(straight, "checkpoints"))} >= {"8", "12"}
    prompts, hf = f"{gcs_emulator.bucket_url}/prompts.txt", f"{gcs_emulator.bucket_url}/hf"
    storage.write_atomic(prompts, "the model\n")
    users = {  # the run directory's readers, side by side
        "sample": _neo(gcs_emulator, "sample", killed, "--prompt-file", prompts, "--temperature", "0",
                       "--max-new-tokens", "4", cwd=cwd),
        "eval": _neo(gcs_emulator, "eval", killed, "--json", cwd=cwd),
        "to-hf": _neo(gcs_emulator, "convert", "to-hf", killed, hf, cwd=cwd),
    }  # fmt: skip
    done = {name: p.communicate(timeout=300) for name, p in users.items()}
    for name, p in users.items():
        assert p.returncode == 0, (name, done[name][1])
    sampled = done["sample"][0]
    assert sampled.startswith("the model") and len(sampled) > len("the model")
    assert json.loads(done["eval"][0])["step"] == 12
    files = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"}
    assert {storage.basename(p) for p in storage.listdir(hf)} == files
    back = _run(gcs_emulator, "convert", "from-hf", hf, f"{gcs_emulator.bucket_url}/runs/from-hf", cwd=cwd)
    assert back.returncode == 0, back.stderr
    assert storage.isfile(f"{gcs_emulator.bucket_url}/runs/from-hf/config.yaml")
    assert os.listdir(cwd) == []


def test_bad_urls_exit_2_with_one_line_and_write_nothing(
    gcs_emulator: GcsEmulator, bucket_data: dict[str, str], tmp_path: Path
) -> None:
    no_bucket = _run(gcs_emulator, "train", *_overrides(bucket_data, "gs://no-such-bucket/run"), cwd=tmp_path)
    assert no_bucket.returncode == 2, no_bucket.stderr
    assert "gs://no-such-bucket does not exist" in no_bucket.stderr
    assert len(no_bucket.stderr.strip().splitlines()) == 1
    start = time.monotonic()
    dead = _run(
        gcs_emulator,
        "data",
        "peek",
        bucket_data["train"],
        cwd=tmp_path,
        env={"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9", "TENSORSTORE_GCS_HTTP_URL": "http://127.0.0.1:9"},
    )
    assert dead.returncode == 2, dead.stderr
    assert "unreachable" in dead.stderr and len(dead.stderr.strip().splitlines()) == 1
    assert time.monotonic() - start < 60
    assert os.listdir(tmp_path) == []  # in particular no `gs:` folder

"""Training end to end at tiny size: the run directory, resume (also after SIGKILL), SIGTERM, NaN, sharding."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pytest

from neo.cli.app import run
from neo.config import compose
from neo.errors import CheckpointError, ConfigError, TrainingError
from neo.train.dry_run import dry_run
from neo.train.loop import train


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_run_directory_contents_and_learning(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable
) -> None:
    run = tmp_path / "run"
    cfg = compose(tiny_overrides(tiny_dataset, run, "train.steps=30", "train.checkpoint_every=10"))
    result = train(cfg, run)
    assert result.final_step == 30
    assert (run / "config.yaml").is_file() and (run / "tokenizer.json").is_file()
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [10, 20, 30]
    assert list((run / "tensorboard").iterdir())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 31))
    assert {"step", "loss", "lr", "tokens_per_sec", "mfu", "grad_norm"} <= set(train_rows[0])
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 10, 20, 30]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] - 0.5  # it learns
    assert "eval_bpb" in evals[-1]


def test_predict_steps_write_samples_at_each_checkpoint(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable
) -> None:
    run = tmp_path / "run"
    train(compose(tiny_overrides(tiny_dataset, run, "train.predict_steps=5", "train.predict_prompt=the model")), run)
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    assert all(r["prompt"] == "the model" and isinstance(r["text"], str) for r in rows)


def test_mlm_training_learns_on_masked_positions(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable
) -> None:
    run = tmp_path / "run"
    mlm = ["model.mlm_training=true", "model.mlm_mask_id=1", "model.mlm_mask_ignore_ids=[0]", "model.mlm_mask_prob=0.3"]
    result = train(compose(tiny_overrides(tiny_dataset, run, "train.steps=20", "train.checkpoint_every=20", *mlm)), run)
    (first_step, first), (last_step, last) = result.eval_losses[0], result.eval_losses[-1]
    assert (first_step, last_step) == (0, 20) and last < first - 0.5
    assert dry_run(compose([*mlm, "model=tiny", "model.n_vocab=320", "train.batch_size=8"])).peak_bytes > 0
    # a bidirectional model cannot continue text: `neo sample` says so before reading its weights
    from neo.infer.sampling import load_for_sampling

    with pytest.raises(ConfigError, match="masked language model"):
        load_for_sampling(run)


def test_resume_continues_exactly(tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable) -> None:
    straight = tmp_path / "straight"
    train(compose(tiny_overrides(tiny_dataset, straight)), straight)
    resumed = tmp_path / "resumed"
    train(compose(tiny_overrides(tiny_dataset, resumed, "train.steps=3")), resumed)
    result = train(compose(tiny_overrides(tiny_dataset, resumed)), resumed)
    assert result.start_step == 3 and result.final_step == 6
    assert losses(resumed) == losses(straight)  # bit-identical on CPU


def test_a_user_error_leaves_no_run_directory(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable
) -> None:
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"data\.dir"):
        train(compose([*tiny_overrides(tiny_dataset, run), "data.dir="]), run)
    assert not run.exists()


def test_resume_refuses_a_different_model(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable
) -> None:
    run = tmp_path / "run"
    train(compose(tiny_overrides(tiny_dataset, run, "train.steps=1")), run)
    with pytest.raises(CheckpointError, match="different model") as info:
        train(compose(tiny_overrides(tiny_dataset, run, "model.n_embd=64", "model.window_size=4")), run)
    assert "model.n_embd: run 32, now 64; model.window_size: run 8, now 4" in str(info.value)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable
) -> None:
    run = tmp_path / "run"
    train(compose(tiny_overrides(tiny_dataset, run, "train.steps=3")), run)
    bad = tiny_overrides(tiny_dataset, run, "optimizer.lr=1e30", "optimizer.warmup_steps=0")
    with pytest.raises(TrainingError, match="at step"):
        train(compose(bad), run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["3"]


def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "neo.cli.app", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early: {proc.stderr.read() if proc.stderr else ''}")
        if time.time() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.05)


@pytest.mark.multiprocess
def test_sigkill_mid_run_then_resume_is_bit_identical(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable
) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    extra = ["train.steps=40", "train.checkpoint_every=10"]
    assert _cli(tiny_overrides(tiny_dataset, straight, *extra)).wait(timeout=300) == 0
    proc = _cli(tiny_overrides(tiny_dataset, killed, *extra))
    _wait_for(killed / "checkpoints" / "20", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    again = _cli(tiny_overrides(tiny_dataset, killed, *extra))
    assert again.wait(timeout=300) == 0, again.stderr.read() if again.stderr else ""
    assert losses(killed) == losses(straight)


@pytest.mark.multiprocess
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_save_then_exit(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable, sig: int, code: int
) -> None:
    run = tmp_path / "run"
    proc = _cli(tiny_overrides(tiny_dataset, run, "train.steps=100000", "train.checkpoint_every=100000"))
    _wait_for(run / "metrics.jsonl", proc)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert "checkpoint saved" in err and "Traceback" not in err
    entries = [p.name for p in (run / "checkpoints").iterdir()]
    saved = [int(name) for name in entries if name.isdigit()]
    assert len(saved) == 1 and 0 < saved[0] < 100000, (entries, err[-2000:])
    assert max(losses(run)) == saved[0]


@pytest.mark.multiprocess
def test_a_second_ctrl_c_stops_at_once_and_the_run_still_resumes(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable
) -> None:
    run = tmp_path / "run"
    extra = ["train.steps=100000", "train.checkpoint_every=2"]
    proc = _cli(tiny_overrides(tiny_dataset, run, *extra))
    _wait_for(run / "checkpoints" / "4", proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    latest = max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    again = _cli(tiny_overrides(tiny_dataset, run, f"train.steps={latest + 2}", "train.checkpoint_every=2"))
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    assert max(losses(run)) == latest + 2


def test_same_losses_on_one_and_eight_devices_dp_and_mp(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable
) -> None:
    """The same config on 1 device and on 8 simulated devices, data- and model-parallel: same losses."""
    from neo.train.session import build_session

    def run_losses(devices: list, extra: list[str]) -> list[float]:
        cfg = compose(tiny_overrides(tiny_dataset, tmp_path / "unused", *extra))
        session = build_session(cfg, tmp_path, devices=devices)
        state = session.fresh_state()
        out = []
        for batch, _ in zip(session.train_batches(0), range(5), strict=False):
            state, metrics = session.train_step(state, session.global_batch(batch))
            out.append(float(metrics["loss"]))
        return out

    assert len(jax.devices()) == 8
    single = run_losses(jax.devices()[:1], [])
    data_parallel = run_losses(jax.devices(), [])
    model_parallel = run_losses(jax.devices(), ["mesh.shape=x:2,y:4", "mesh.layout=batch:x,heads:y,mlp:y,vocab:y"])
    np.testing.assert_allclose(data_parallel, single, atol=1e-5)
    np.testing.assert_allclose(model_parallel, single, atol=1e-5)


def test_gradient_accumulation_equals_the_full_batch_gradient(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable
) -> None:
    from neo.train.session import build_session

    def first_step(extra: list[str]) -> tuple[float, float]:
        cfg = compose(tiny_overrides(tiny_dataset, tmp_path / "unused", *extra))
        session = build_session(cfg, tmp_path, devices=jax.devices()[:1])
        state = session.fresh_state()
        batch = next(iter(session.train_batches(0)))
        _, metrics = session.train_step(state, session.global_batch(batch))
        return float(metrics["loss"]), float(metrics["grad_norm"])

    full = first_step([])
    accumulated = first_step(["train.tokens_per_mb_per_replica=64"])  # 2 sequences of 32 -> 4 micro-batches
    np.testing.assert_allclose(accumulated, full, rtol=1e-5)


def _chunked_dataset(tiny_dataset: dict[str, Path], root: Path, documents: int = 60) -> Path:
    """One shard of 33-token chunks (each batch row reads its own stretch of them, in order)."""
    from neo.data.encode import encode_dataset
    from tests.conftest import _documents

    (root / "txt").mkdir(parents=True)
    for i, doc in enumerate(_documents(documents, 0)):
        (root / "txt" / f"{i:03d}.txt").write_text(doc)
    encode_dataset([root / "txt"], root / "data", tiny_dataset["tokenizer"], mode="chunks", chunk_size=32, name="c")
    return root / "data"


def test_a_truncated_shard_refuses_the_run_before_anything_is_written(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _chunked_dataset(tiny_dataset, tmp_path)
    (shard,) = data.glob("*.tfrecords")
    shard.write_bytes(shard.read_bytes()[:-100])
    run_dir = tmp_path / "run"
    assert run(["train", *tiny_overrides(tiny_dataset, run_dir, f"data.dir={data}", "data.mode=chunks")]) == 2
    err = capsys.readouterr().err
    assert shard.name in err and "damaged (truncated or changed)" in err and "Traceback" not in err
    assert not run_dir.exists()


def test_a_damaged_record_met_mid_run_stops_with_a_checkpoint_of_the_last_step(
    tiny_dataset: dict[str, Path],
    tmp_path: Path,
    tiny_overrides: Callable,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("neo.data.pipeline._CACHE_TOKENS", 0)  # stream the shard as a large dataset is read
    data = _chunked_dataset(tiny_dataset, tmp_path, documents=200)
    (shard,) = data.glob("*.tfrecords")
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # a record in the middle: same size, wrong CRC, met only when a row reaches it
    shard.write_bytes(bytes(raw))
    run_dir = tmp_path / "run"
    extra = ["train.steps=500", "train.checkpoint_every=1000", "train.eval_steps=0", f"data.dir={data}"]
    assert run(["train", *tiny_overrides(tiny_dataset, run_dir, *extra, "data.mode=chunks")]) == 2
    err = capsys.readouterr().err
    assert "CRC mismatch" in err and shard.name in err and "Traceback" not in err
    saved = [int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(saved) == 1 and saved[0] >= 5 and max(losses(run_dir)) == saved[0]  # every trained step kept


def test_moe_balance_loss_is_logged_beside_the_cross_entropy(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable
) -> None:
    run_dir = tmp_path / "run"
    train(compose(tiny_overrides(tiny_dataset, run_dir, "model.moe_layers=[1]", "train.steps=2")), run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    step_rows = [r for r in rows if "loss" in r]
    assert step_rows and all(r["aux_loss"] > 0 for r in step_rows)
    assert all(r["loss"] == pytest.approx(r["ce_loss"] + r["aux_loss"], rel=1e-5) for r in step_rows)

"""Checkpoints survive a crash in the middle of an asynchronous save (issue 5): "training never loses work"."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from neo.config import compose
from neo.train.checkpoint import Checkpoints
from neo.train.loop import train
from tests.train import kill_before_commit
from tests.train.test_loop import losses


def _cli(args: list[str], kill_before_commit_of: int) -> subprocess.Popen:
    """`neo train` in a child process with this process's devices (8 simulated), so its numerics match `train()` here
    and the resumed run can be in-process, skipping a second start-up. The child SIGKILLs itself when the checkpoint
    of step `kill_before_commit_of` is written but not yet committed."""
    return subprocess.Popen(
        [*kill_before_commit.command(kill_before_commit_of), "train", *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _step_dirs(run: Path) -> tuple[list[int], list[str]]:
    """(committed steps, names of orbax's uncommitted temporary step directories)."""
    entries = list((run / "checkpoints").iterdir())
    committed = sorted(int(p.name) for p in entries if p.name.isdigit())
    return committed, sorted(p.name for p in entries if ".orbax-checkpoint-tmp" in p.name)


@pytest.mark.slow  # 40-90 s on 2 shared cores: a child `neo train` plus two in-process runs
@pytest.mark.multiprocess
def test_sigkill_during_an_async_save_resumes_from_the_last_complete_checkpoint(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable
) -> None:
    # async saves (the default), and keep only one checkpoint: pruning step 10 before step 20 is committed would lose
    # every checkpoint
    extra = ["train.steps=30", "train.checkpoint_every=10", "train.async_checkpointing=true"]
    extra.append("train.keep_checkpoints=1")
    killed, straight = tmp_path / "killed", tmp_path / "straight"

    # the crash: step 20 is fully written in its temporary directory, its commit (the rename) has not happened
    proc = _cli(tiny_overrides(tiny_dataset, killed, *extra), kill_before_commit_of=20)
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    committed, partial = _step_dirs(killed)
    assert committed == [10] and len(partial) == 1 and partial[0].startswith("20.")  # the crash was mid-save
    assert any((killed / "checkpoints" / partial[0]).iterdir())  # ... with the step's data written
    # (a) the half-written step is not taken as the latest
    ckpts = Checkpoints(killed, read_only=True, async_save=False)
    assert ckpts.latest_step() == 10
    ckpts.close()

    # (b) the restarted run resumes from step 10 and cleans the leftover up
    result = train(compose(tiny_overrides(tiny_dataset, killed, *extra)), killed)
    assert (result.start_step, result.final_step) == (10, 30)
    assert _step_dirs(killed) == ([30], [])

    # (c) bit-identical to a run that was never interrupted
    train(compose(tiny_overrides(tiny_dataset, straight, *extra)), straight)
    assert losses(killed) == losses(straight)
    assert sorted(losses(killed)) == list(range(1, 31))


def _damage(step_dir: Path) -> None:
    """What a full disk or a bad copy leaves: every data file of the step's optimizer state cut to nothing."""
    files = [p for p in (step_dir / "opt_state").rglob("*") if p.is_file() and not p.name.startswith("_")]
    assert files
    for p in files:
        p.write_bytes(b"")


def test_a_damaged_latest_checkpoint_is_skipped_with_a_warning_and_resume_stays_exact(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable
) -> None:
    straight, damaged = tmp_path / "straight", tmp_path / "damaged"
    extra = ["train.steps=9", "train.checkpoint_every=3"]
    train(compose(tiny_overrides(tiny_dataset, straight, *extra)), straight)
    train(compose(tiny_overrides(tiny_dataset, damaged, "train.steps=6", "train.checkpoint_every=3")), damaged)
    _damage(damaged / "checkpoints" / "6")
    warnings: list[str] = []
    from neo.train.loop import Hooks

    result = train(compose(tiny_overrides(tiny_dataset, damaged, *extra)), damaged, Hooks(on_warning=warnings.append))
    assert result.start_step == 3 and len(warnings) == 1 and warnings[0].startswith("checkpoint 6 cannot be read")
    assert losses(damaged) == losses(straight)  # steps 4-9 retrained from step 3: nothing lost but the time


def test_when_no_checkpoint_reads_back_the_run_stops_instead_of_starting_afresh(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides: Callable, capsys: pytest.CaptureFixture[str]
) -> None:
    from neo.cli.app import run

    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_dataset, run_dir, "train.steps=3", "train.checkpoint_every=3")
    train(compose(overrides), run_dir)
    _damage(run_dir / "checkpoints" / "3")
    assert run(["train", *overrides]) == 2
    err = capsys.readouterr().err
    assert "checkpoint 3 cannot be read" in err and "no checkpoint in" in err and "reads back" in err
    assert max(losses(run_dir)) == 3 and min(losses(run_dir)) == 1  # nothing was trained afresh

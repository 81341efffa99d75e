"""The quickstart pipeline at tiny size: every stage runs for real and the eval loss falls."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from neo.cli.app import run


def test_quickstart_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["quickstart", "--workdir", str(tmp_path), "--steps", "40"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"eval loss: step 0 ([\d.]+) → step 40 ([\d.]+)", out)
    assert match, out
    first, last = map(float, match.groups())
    assert last < first - 0.5
    assert re.search(r"\(([\d.]+) → ([\d.]+) bits/byte on held-out text\)", out), out
    assert "greedy sample: 'Return the" in out
    assert "training loss:" in out and "┤" in out and "step 40" in out  # the terminal loss plot
    assert f"tensorboard --logdir {tmp_path / 'run' / 'tensorboard'}" in out
    run_dir = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "tokenizer.json"):
        assert (run_dir / name).is_file()
    assert (tmp_path / "data" / "train" / "dataset.yaml").is_file()

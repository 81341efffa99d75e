"""The quickstart pipeline at tiny size: every stage runs for real and the eval loss falls."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

from neo.cli.app import run
from neo.cli.quickstart import corpus_word_share
from neo.data import stdlib_corpus


def test_quickstart_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole command on the corpus's first 300 KB, every 5th document held out (enough for an eval batch): the
    full 1.3 MB only makes tokenizer training and encoding slower."""
    small = functools.partial(stdlib_corpus.write_corpus, max_chars=300_000, eval_every=5)
    monkeypatch.setattr(stdlib_corpus, "write_corpus", small)
    assert run(["quickstart", "--workdir", str(tmp_path), "--steps", "40"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"eval loss: step 0 ([\d.]+) → step 40 ([\d.]+)", out)
    assert match, out
    first, last = map(float, match.groups())
    assert last < first - 0.5
    assert re.search(r"\(([\d.]+) → ([\d.]+) bits/byte on held-out text\)", out), out
    samples = re.findall(r"^  │ (Return the.*)$", out, flags=re.M)
    assert len(samples) == 2 and samples[0] != samples[1], out  # two different samples, each after the prompt
    share = re.search(r"(\d+)% of the sampled words \(prompt excluded\) occur in the training corpus", out)
    assert share and 0 <= int(share.group(1)) <= 100, out
    assert "training loss:" in out and "┤" in out and "step 40" in out  # the terminal loss plot
    assert f"tensorboard --logdir {tmp_path / 'run' / 'tensorboard'}" in out
    run_dir = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "tokenizer.json"):
        assert (run_dir / name).is_file()
    assert (tmp_path / "data" / "train" / "dataset.yaml").is_file()


def test_corpus_word_share_counts_words_of_the_corpus(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Return the value of x.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("A socket.\n", encoding="utf-8")
    assert corpus_word_share(["value socket", "qzx the"], tmp_path) == 0.75
    assert corpus_word_share([""], tmp_path) == 0.0

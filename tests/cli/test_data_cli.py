"""`neo tokenizer train`, `neo data encode`, `neo data peek` end to end through the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import zstandard


def neo(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "neo.cli.app", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_folder_to_verified_dataset(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    text = "the quick brown fox jumps over the lazy dog; "
    (corpus / "a.txt").write_text(text * 30)
    (corpus / "sub" / "b.txt").write_text((text * 10)[::-1])
    lines = "\n".join(json.dumps({"text": f"{text} number {i}"}) for i in range(50))
    (corpus / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    (corpus / "bad.txt").write_bytes(b"\xff\x00")

    r = neo("tokenizer", "train", corpus, "--out", tmp_path / "tok", "--vocab-size", "300", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "vocab" in r.stdout and "skipped" in r.stderr
    r = neo("tokenizer", "train", corpus, "--out", tmp_path / "tok", "--vocab-size", "300", cwd=tmp_path)
    assert r.returncode == 2 and "--force" in r.stderr and "Traceback" not in r.stderr

    args = ["data", "encode", corpus, "--out", tmp_path / "ds", "--tokenizer", tmp_path / "tok"]
    r = neo(*args, "--mode", "chunks", "--chunk-size", "64", "--files-per", "20", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "records" in r.stdout and "skipped 1 files" in r.stdout

    r = neo("data", "peek", tmp_path / "ds", "--json", "--samples", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] and report["records"] > 10 and report["max_id"] < 300 and len(report["samples"]) == 1
    assert report["max_length"] == 65

    r = neo("data", "peek", tmp_path / "ds", "--n-vocab", "10", cwd=tmp_path)
    assert r.returncode == 2 and "not below the vocabulary size 10" in r.stderr
    assert "record lengths" in r.stdout  # the report is still shown

    r = neo("data", "encode", corpus, "--out", tmp_path / "x", "--tokenizer", tmp_path / "none.json", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") <= 2 and "not found" in r.stderr


def test_help_has_examples(tmp_path: Path) -> None:
    for group, verb in (("tokenizer", "train"), ("data", "encode"), ("data", "peek")):
        r = neo(group, verb, "--help", cwd=tmp_path)
        assert r.returncode == 0 and "Example: neo" in r.stdout

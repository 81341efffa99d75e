"""Helpers shared by the data tests (imported by name: tests/ directories are not packages)."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = ["<|endoftext|>", "<|padding|>"] + [chr(ord("a") + i) for i in range(26)]
ID = {w: i for i, w in enumerate(WORDS)}  # "a" -> 2, "b" -> 3, ...


def ids(text: str) -> list[int]:
    """The hand-computed token ids of a space-separated text under the `word_tokenizer` fixture."""
    return [ID[w] for w in text.split()]


def write_jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("\n".join(json.dumps({"text": d}) for d in docs))  # no trailing newline: the tail must survive
    return path

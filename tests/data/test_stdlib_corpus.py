"""The embedded default corpus: present on every machine, deterministic, prose-shaped."""

from __future__ import annotations

from pathlib import Path

from neo.data.stdlib_corpus import _unwrap, iter_documents, write_corpus


def test_corpus_is_large_enough_and_deterministic() -> None:
    first = list(iter_documents(max_chars=200_000))
    assert sum(map(len, first)) >= 200_000
    assert first == list(iter_documents(max_chars=200_000))
    assert all(isinstance(d, str) and d.strip() for d in first)


def test_prose_is_unwrapped_and_code_is_kept() -> None:
    doc = "A wrapped\nsentence here.\n\n    indented code\n    more code\n\n>>> 1 + 1\n2"
    assert _unwrap(doc) == "A wrapped sentence here.\n\n    indented code\n    more code\n\n>>> 1 + 1\n2"


def test_write_corpus_holds_out_every_nth_document(tmp_path: Path) -> None:
    train, held_out, n = write_corpus(tmp_path, max_chars=100_000, eval_every=5)
    n_train, n_eval = len(list(train.glob("*.txt"))), len(list(held_out.glob("*.txt")))
    assert n_train + n_eval == n and n_eval == n // 5

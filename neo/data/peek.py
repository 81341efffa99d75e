"""Inspect an encoded dataset: read every record and check it against its card and the model's vocabulary.

GPT-Neo's `--check_dataset` never looked at token ids; here an id at or above the vocabulary size is an error, as is
a record count or token count that disagrees with the card (a truncated or foreign shard).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from neo import storage
from neo.data.card import dataset_card
from neo.data.tfrecord import read_records
from neo.data.tokenizer import load_tokenizer
from neo.errors import DataError


@dataclass
class PeekReport:
    directory: str
    name: str
    mode: str
    shards: int
    records: int
    documents: int
    tokens: int
    min_id: int
    max_id: int
    n_vocab: int
    min_length: int
    max_length: int
    mean_length: float
    histogram: list[tuple[int, int, int]]  # (low, high, count): record lengths in [low, high)
    bytes_per_token: float
    skipped_files: int
    dropped_tokens: int
    samples: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _histogram(lengths: np.ndarray, bins: int = 10) -> list[tuple[int, int, int]]:
    if lengths.size == 0:
        return []
    lo, hi = int(lengths.min()), int(lengths.max()) + 1
    edges = np.unique(np.linspace(lo, hi, bins + 1).round().astype(np.int64))
    counts, _ = np.histogram(lengths, bins=edges)
    return [(int(a), int(b), int(c)) for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)]


def peek_dataset(
    directory: str | os.PathLike[str],
    *,
    tokenizer: str | os.PathLike[str] | None = None,
    n_vocab: int | None = None,
    samples: int = 3,
    sample_tokens: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> PeekReport:
    """Read all of `directory`'s records and report counts, lengths, id range, decoded samples and problems.

    `n_vocab` defaults to the card's vocabulary size; `tokenizer` (for decoding) defaults to the dataset's own copy.
    `progress(records_read, records_total)` is called as records stream.
    """
    directory = os.fspath(directory)
    card = dataset_card(directory)
    n_vocab = card.vocab_size if n_vocab is None else n_vocab
    if n_vocab < 1:
        raise DataError(f"--n-vocab must be positive, got {n_vocab}")
    tok = load_tokenizer(tokenizer if tokenizer is not None else storage.join(directory, card.tokenizer))
    lengths: list[int] = []
    min_id, max_id, total = np.iinfo(np.int64).max, -1, 0
    texts: list[str] = []
    for i, rec in enumerate(read_records(card.shard_paths(directory)), 1):
        lengths.append(len(rec))
        total += len(rec)
        if len(rec):
            min_id, max_id = min(min_id, int(rec.min())), max(max_id, int(rec.max()))
        if len(texts) < samples:
            texts.append(tok.decode([int(t) for t in rec[:sample_tokens]], skip_special_tokens=False))
        if progress is not None and i % 1000 == 0:
            progress(i, card.records)
    if progress is not None:
        progress(len(lengths), card.records)
    arr = np.asarray(lengths, dtype=np.int64)
    problems = []
    if max_id >= n_vocab:
        problems.append(f"max token id {max_id} is not below the vocabulary size {n_vocab}")
    if min_id < 0 and arr.size:
        problems.append(f"negative token id {min_id}")
    if len(arr) != card.records:
        problems.append(f"{len(arr)} records on disk but the card says {card.records}")
    if total != card.tokens:
        problems.append(f"{total} tokens on disk but the card says {card.tokens}")
    return PeekReport(
        directory=str(directory),
        name=card.name,
        mode=card.mode,
        shards=len(card.shards),
        records=len(arr),
        documents=card.documents - card.documents_dropped,
        tokens=total,
        min_id=int(min_id) if arr.size else 0,
        max_id=int(max_id),
        n_vocab=n_vocab,
        min_length=int(arr.min()) if arr.size else 0,
        max_length=int(arr.max()) if arr.size else 0,
        mean_length=round(float(arr.mean()), 2) if arr.size else 0.0,
        histogram=_histogram(arr),
        bytes_per_token=card.bytes_per_token,
        skipped_files=card.skipped_files,
        dropped_tokens=card.dropped_tokens,
        samples=texts,
        problems=problems,
    )

"""The dataset card, `DIR/dataset.yaml`: what `neo data encode` wrote, so training and `peek` never guess.

It names the tokenizer (copied into DIR so a dataset is self-contained), its vocabulary size and special ids, the
encoding mode, counts, and every shard with its record and token counts (the input pipeline uses those counts to
skip whole epochs and shards on resume without reading them).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from neo import storage
from neo.errors import DataError

CARD_FILE = "dataset.yaml"
FORMAT = "neo-dataset/1"


@dataclass
class ShardInfo:
    file: str  # file name inside the dataset directory
    records: int
    tokens: int
    documents: int
    bytes: int = 0  # the file's size, checked when the dataset is opened (0: a card written before sizes were kept)


@dataclass
class DatasetCard:
    name: str
    mode: str  # "documents" (one record per document + separator) or "chunks" (chunk_size+1 token slices)
    tokenizer: str  # tokenizer.json inside the dataset directory
    tokenizer_fingerprint: str
    vocab_size: int
    eos_id: int
    pad_id: int | None
    separator: list[int]
    chunk_size: int | None
    minimum_size: int
    files_per: int
    input_files: int = 0
    skipped_files: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    documents: int = 0  # documents read from the inputs
    documents_dropped: int = 0  # documents shorter than minimum_size (documents mode)
    records: int = 0
    tokens: int = 0  # tokens written, separators included
    dropped_tokens: int = 0  # tokens read but not written (short documents; a final chunk remainder)
    bytes_per_token: float = 0.0  # UTF-8 bytes of text per token, for bits-per-byte metrics
    min_record_tokens: int = 0
    max_record_tokens: int = 0
    shards: list[ShardInfo] = field(default_factory=list)
    format: str = FORMAT

    def shard_paths(self, directory: str | os.PathLike[str]) -> list[str]:
        return [storage.join(directory, s.file) for s in self.shards]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def write_card(directory: str | os.PathLike[str], card: DatasetCard) -> str:
    """Write the card atomically (complete or not at all, locally or in an object store)."""
    target = storage.join(directory, CARD_FILE)
    storage.write_atomic(target, yaml.safe_dump(card.to_dict(), sort_keys=False))
    return target


def dataset_card(directory: str | os.PathLike[str]) -> DatasetCard:
    """Read `directory/dataset.yaml` (any location); a missing or foreign card is a DataError that says what to run."""
    directory = os.fspath(directory)
    path = storage.join(directory, CARD_FILE)
    if not storage.isfile(path):
        raise DataError(f"{directory} has no {CARD_FILE}; write a dataset there with `neo data encode ... --out DIR`")
    try:
        raw = yaml.safe_load(storage.read_text(path))
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise TypeError("unknown format")
        raw["shards"] = [ShardInfo(**s) for s in raw.get("shards", [])]
        card = DatasetCard(**raw)
    except (yaml.YAMLError, TypeError) as exc:
        raise DataError(
            f"{path} is not a neo dataset card ({exc}); re-run `neo data encode` into that directory"
        ) from None
    present = storage.sizes(directory)
    missing = [s.file for s in card.shards if s.file not in present]
    if missing:
        raise DataError(f"{directory} is missing shard {missing[0]}; re-run the same `neo data encode` to finish it")
    # a truncated copy or a full disk shows in the size, at the cost of one listing; every damaged shard is named
    damaged = [
        f"{s.file} ({present[s.file]:,} of {s.bytes:,} bytes)"
        for s in card.shards
        if s.bytes and present[s.file] != s.bytes
    ]
    if damaged:
        raise DataError(
            f"{directory}: {len(damaged)} of {len(card.shards)} shards are damaged (truncated or changed): "
            f"{', '.join(damaged)}; re-encode the dataset or restore those files"
        )
    return card

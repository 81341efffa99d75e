"""`encode_dataset`: both modes against hand-computed tokens, tails, worker independence, resume, bad inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tokenizers import Tokenizer

from neo.data import encode
from neo.data.card import dataset_card
from neo.data.encode import EncodeProgress, encode_dataset
from neo.data.tfrecord import read_records
from neo.errors import DataError
from tests.data.datahelpers import ids, write_jsonl

EOS = 0


def records(out: Path) -> list[list[int]]:
    card = dataset_card(out)
    return [r.tolist() for r in read_records(card.shard_paths(out))]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    write_jsonl(root / "1.jsonl", ["a b c", "d e", "f"])
    (root / "2.txt").write_text("g h i j")
    (root / "3.bad.txt").write_bytes(b"\xc3\x28 invalid")
    write_jsonl(root / "4.jsonl", ["k l m n o"])
    return root


def test_documents_mode_hand_computed(tmp_path: Path, corpus: Path, word_tokenizer: Path) -> None:
    out = tmp_path / "ds"
    card = encode_dataset([corpus], out, word_tokenizer, mode="documents", files_per=2)
    assert records(out) == [
        [*ids("a b c"), EOS],
        [*ids("d e"), EOS],
        [*ids("f"), EOS],
        [*ids("g h i j"), EOS],
        [*ids("k l m n o"), EOS],
    ]
    assert [s.documents for s in card.shards] == [2, 2, 1] and [s.records for s in card.shards] == [2, 2, 1]
    assert (card.documents, card.records, card.tokens, card.dropped_tokens) == (5, 5, 20, 0)
    assert card.skipped_files == 1 and "3.bad.txt" in card.skipped[0]["path"]
    assert (card.vocab_size, card.eos_id, card.pad_id, card.separator) == (28, 0, 1, [0])
    assert (card.min_record_tokens, card.max_record_tokens) == (2, 6)
    assert card.bytes_per_token == pytest.approx(len("a b cd ef" + "g h i j" + "k l m n o") / 15, abs=1e-3)
    assert (
        Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab()
        == Tokenizer.from_file(str(word_tokenizer)).get_vocab()
    )
    raw = yaml.safe_load((out / "dataset.yaml").read_text())
    assert raw["mode"] == "documents" and raw["tokenizer"] == "tokenizer.json"


def test_documents_minimum_size_drops_and_counts(tmp_path: Path, corpus: Path, word_tokenizer: Path) -> None:
    card = encode_dataset([corpus], tmp_path / "ds", word_tokenizer, minimum_size=3, separator=[1, 0])
    assert records(tmp_path / "ds") == [[*ids("a b c"), 1, 0], [*ids("g h i j"), 1, 0], [*ids("k l m n o"), 1, 0]]
    assert (card.documents_dropped, card.dropped_tokens) == (2, 3)


def test_chunks_mode_carries_tails_across_documents_files_and_shards(
    tmp_path: Path, corpus: Path, word_tokenizer: Path
) -> None:
    out = tmp_path / "ds"
    card = encode_dataset([corpus], out, word_tokenizer, mode="chunks", chunk_size=3, files_per=2)
    stream = [*ids("a b c"), EOS, *ids("d e"), EOS, *ids("f"), EOS, *ids("g h i j"), EOS]
    stream += [*ids("k l m n o"), EOS]
    assert len(stream) == 20
    expected = [stream[i : i + 4] for i in range(0, 20, 4)]
    assert records(out) == expected  # 20 tokens = 5 records of chunk_size+1, nothing dropped
    assert card.dropped_tokens == 0 and card.chunk_size == 3
    # shard 0 holds docs 0-1 (7 tokens: one record, 3 carried), shard 1 docs 2-3, shard 2 doc 4
    assert [s.records for s in card.shards] == [1, 2, 2]


def test_chunks_final_remainder(tmp_path: Path, corpus: Path, word_tokenizer: Path) -> None:
    stream = [*ids("a b c"), EOS, *ids("d e"), EOS, *ids("f"), EOS, *ids("g h i j"), EOS]
    stream += [*ids("k l m n o"), EOS]
    kept = encode_dataset([corpus], tmp_path / "kept", word_tokenizer, mode="chunks", chunk_size=5, minimum_size=2)
    assert records(tmp_path / "kept") == [stream[0:6], stream[6:12], stream[12:18], stream[18:20]]
    assert kept.dropped_tokens == 0
    dropped = encode_dataset([corpus], tmp_path / "drop", word_tokenizer, mode="chunks", chunk_size=5, minimum_size=3)
    assert records(tmp_path / "drop") == [stream[0:6], stream[6:12], stream[12:18]]
    assert dropped.dropped_tokens == 2 and dropped.tokens == 18


def _big_corpus(root: Path, n_files: int = 6, docs_per: int = 40) -> Path:
    root.mkdir()
    letters = "abcdefghijklmnopqrstuvwxyz"
    for f in range(n_files):
        docs = [" ".join(letters[(f * 7 + d * 3 + k) % 26] for k in range(1 + (f + d) % 17)) for d in range(docs_per)]
        write_jsonl(root / f"{f:02d}.jsonl", docs)
    return root


@pytest.mark.parametrize("mode", ["documents", "chunks"])
def test_same_records_whatever_the_worker_count(tmp_path: Path, word_tokenizer: Path, mode: str) -> None:
    corpus = _big_corpus(tmp_path / "c")
    kw = dict(mode=mode, chunk_size=7, files_per=50)
    one = encode_dataset([corpus], tmp_path / "one", word_tokenizer, workers=1, **kw)
    two = encode_dataset([corpus], tmp_path / "two", word_tokenizer, workers=2, **kw)
    assert records(tmp_path / "one") == records(tmp_path / "two")
    assert one.shards == two.shards and len(one.shards) == 5
    for shard in one.shards:
        assert (tmp_path / "one" / shard.file).read_bytes() == (tmp_path / "two" / shard.file).read_bytes()


@pytest.mark.parametrize("mode", ["documents", "chunks"])
def test_small_batches_give_the_same_records(
    tmp_path: Path, word_tokenizer: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two tokenizer calls are in flight at a time: with a batch every few documents, records keep stream order."""
    corpus = _big_corpus(tmp_path / "c")
    kw = dict(mode=mode, chunk_size=7, files_per=10_000)
    encode_dataset([corpus], tmp_path / "whole", word_tokenizer, **kw)
    monkeypatch.setattr(encode, "FIRST_BATCH_CHARS", 16)
    monkeypatch.setattr(encode, "BATCH_CHARS", 100)
    encode_dataset([corpus], tmp_path / "small", word_tokenizer, **kw)
    assert records(tmp_path / "small") == records(tmp_path / "whole")
    assert len(records(tmp_path / "whole")) > 100


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("mode", ["documents", "chunks"])
def test_interrupted_encode_resumes_to_identical_output(tmp_path: Path, word_tokenizer: Path, mode: str) -> None:
    corpus = _big_corpus(tmp_path / "c")
    kw = dict(mode=mode, chunk_size=5, files_per=30)
    ref = encode_dataset([corpus], tmp_path / "ref", word_tokenizer, **kw)
    out = tmp_path / "out"

    def stop_after_two_shards(p: EncodeProgress) -> None:
        if p.shards_done >= 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        encode_dataset([corpus], out, word_tokenizer, progress=stop_after_two_shards, **kw)
    finished = sorted(p.name for p in out.glob("*.tfrecords"))
    assert finished == ["data_00000.tfrecords", "data_00001.tfrecords"]
    assert not list(out.glob(".*.tmp")) and not (out / "dataset.yaml").exists()
    (out / ".data_00002.tfrecords.tmp").write_bytes(b"half-written by a killed run")
    before = {name: (out / name).stat().st_mtime_ns for name in finished}

    tokenized_docs: list[int] = []
    card = encode_dataset([corpus], out, word_tokenizer, progress=lambda p: tokenized_docs.append(p.documents), **kw)
    assert records(out) == records(tmp_path / "ref")
    assert card.to_dict() == ref.to_dict()
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == before  # finished shards untouched
    assert not list(out.glob(".*.tmp"))
    # re-running a finished encode is a no-op that rewrites the same card
    assert encode_dataset([corpus], out, word_tokenizer, **kw).to_dict() == ref.to_dict()


def test_refuses_foreign_non_empty_out_unless_forced(tmp_path: Path, corpus: Path, word_tokenizer: Path) -> None:
    out = tmp_path / "ds"
    encode_dataset([corpus], out, word_tokenizer)
    with pytest.raises(DataError, match="--force"):
        encode_dataset([corpus], out, word_tokenizer, mode="chunks", chunk_size=3)
    card = encode_dataset([corpus], out, word_tokenizer, mode="chunks", chunk_size=3, force=True)
    assert card.mode == "chunks" and dataset_card(out).mode == "chunks"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        encode_dataset([corpus], other, word_tokenizer)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(mode="lines"), "--mode"),
        (dict(chunk_size=0), "--chunk-size"),
        (dict(files_per=0), "--files-per"),
        (dict(workers=0), "--workers"),
        (dict(separator=[99]), "--separator"),
        (dict(name="../x"), "--name"),
    ],
)
def test_bad_options(tmp_path: Path, corpus: Path, word_tokenizer: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        encode_dataset([corpus], tmp_path / "ds", word_tokenizer, **kwargs)


def test_no_readable_documents(tmp_path: Path, word_tokenizer: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    (root / "bin.txt").write_bytes(b"\x00\x00")
    (root / "empty.txt").write_text("")
    with pytest.raises(DataError, match="no readable documents"):
        encode_dataset([root], tmp_path / "ds", word_tokenizer)
    assert not (tmp_path / "ds").exists()  # nothing left behind: not even the tokenizer copy


def test_missing_tokenizer(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(DataError, match="tokenizer"):
        encode_dataset([corpus], tmp_path / "ds", tmp_path / "none.json")

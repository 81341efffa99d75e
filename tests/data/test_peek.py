"""`peek_dataset`: counts, id range against the vocabulary, samples, and disagreement with the card."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from neo.data.encode import encode_dataset
from neo.data.peek import peek_dataset
from neo.errors import DataError
from tests.data.datahelpers import write_jsonl


@pytest.fixture
def dataset(tmp_path: Path, word_tokenizer: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "a.jsonl", ["a b c", "z y", "m"])
    out = tmp_path / "ds"
    encode_dataset([src], out, word_tokenizer)
    return out


def test_report(dataset: Path) -> None:
    r = peek_dataset(dataset, samples=2)
    assert (r.records, r.documents, r.tokens, r.shards) == (3, 3, 9, 1)
    assert (r.min_id, r.max_id, r.n_vocab) == (0, 27, 28)
    assert (r.min_length, r.max_length) == (2, 4)
    assert sum(c for _, _, c in r.histogram) == 3
    assert r.samples == ["a b c <|endoftext|>", "z y <|endoftext|>"]
    assert r.ok and r.to_dict()["ok"] is True


def test_max_id_must_be_below_vocab(dataset: Path) -> None:
    r = peek_dataset(dataset, n_vocab=27)
    assert not r.ok and "max token id 27 is not below the vocabulary size 27" in r.problems[0]


def test_card_disagreement_is_a_problem(dataset: Path) -> None:
    card_path = dataset / "dataset.yaml"
    card = yaml.safe_load(card_path.read_text())
    card["records"] = 4
    card_path.write_text(yaml.safe_dump(card))
    assert any("card says 4" in p for p in peek_dataset(dataset).problems)


def test_missing_pieces(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no dataset\.yaml"):
        peek_dataset(tmp_path)
    (dataset / "data_00000.tfrecords").unlink()
    with pytest.raises(DataError, match="missing shard"):
        peek_dataset(dataset)


def test_every_damaged_shard_is_named_in_one_line(tmp_path: Path, word_tokenizer: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "a.jsonl", [f"a b c {'z ' * i}" for i in range(6)])
    encode_dataset([src], tmp_path / "ds", word_tokenizer, files_per=2)
    shards = sorted((tmp_path / "ds").glob("*.tfrecords"))
    assert len(shards) == 3
    for shard in (shards[0], shards[2]):
        shard.write_bytes(shard.read_bytes()[:-3])
    with pytest.raises(DataError) as info:
        peek_dataset(tmp_path / "ds")
    message = str(info.value)
    assert "2 of 3 shards are damaged" in message and shards[0].name in message and shards[2].name in message
    assert shards[1].name not in message and "\n" not in message

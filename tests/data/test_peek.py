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

"""Tokenizer training and loading."""

from __future__ import annotations

import socket
import time
import unicodedata
from pathlib import Path

import pytest
import zstandard
from tokenizers import Tokenizer

from neo.data import tokenizer as tokmod
from neo.data.tokenizer import EOS_TOKEN, PAD_TOKEN, load_tokenizer, train_tokenizer
from neo.errors import DataError
from tests.data.datahelpers import write_jsonl

TEXT = "the quick brown fox jumps over the lazy dog. " * 20


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "a.txt").write_text(TEXT)
    write_jsonl(root / "b.jsonl", [TEXT[::-1], "ﬁne ligature ①"])
    (root / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "zstd doc"}'))
    (root / "bad.txt").write_bytes(b"\xff\xfe")
    return root


def test_train_writes_loadable_tokenizer(tmp_path: Path, corpus: Path) -> None:
    seen: list[int] = []
    summary = train_tokenizer([corpus], tmp_path / "tok", 300, min_frequency=1, progress=lambda d, c: seen.append(d))
    assert (summary.eos_id, summary.pad_id) == (0, 1)
    assert summary.documents == 4 and len(summary.skipped) == 1 and seen[-1] == 4
    tok = Tokenizer.from_file(summary.path)
    assert tok.token_to_id(EOS_TOKEN) == 0 and tok.token_to_id(PAD_TOKEN) == 1
    assert 258 < tok.get_vocab_size() <= 300
    text = "the lazy fox ünï"
    assert tok.decode(tok.encode(text).ids) == text  # byte-level: lossless on unseen characters
    assert len(tok.encode("the quick brown fox").ids) < len("the quick brown fox")  # merges were learned


@pytest.mark.hf
def test_transformers_loads_it(tmp_path: Path, corpus: Path) -> None:
    transformers = pytest.importorskip("transformers")
    summary = train_tokenizer([corpus], tmp_path / "tok", 300)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=summary.path, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    assert fast.decode(fast("over the dog")["input_ids"]) == "over the dog"
    assert fast.eos_token_id == 0 and fast.pad_token_id == 1


def test_nfkc_is_optional(tmp_path: Path, corpus: Path) -> None:
    plain = Tokenizer.from_file(train_tokenizer([corpus], tmp_path / "p", 300).path)
    nfkc = Tokenizer.from_file(train_tokenizer([corpus], tmp_path / "n", 300, nfkc=True).path)
    assert plain.decode(plain.encode("ﬁ①").ids) == "ﬁ①"
    assert nfkc.decode(nfkc.encode("ﬁ①").ids) == unicodedata.normalize("NFKC", "ﬁ①") == "fi1"


def test_refuses_non_empty_out_unless_forced(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "tok"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="--force"):
        train_tokenizer([corpus], out, 300)
    train_tokenizer([corpus], out, 300, force=True)
    assert (out / "tokenizer.json").is_file() and (out / "keep.txt").read_text() == "mine"  # nothing deleted


def test_bad_arguments(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(DataError, match="vocab-size"):
        train_tokenizer([corpus], tmp_path / "t", 100)
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.txt").write_bytes(b"\x00\x01")
    with pytest.raises(DataError, match="no readable documents"):
        train_tokenizer([only_bad], tmp_path / "t2", 300)
    assert not (tmp_path / "t2" / "tokenizer.json").exists()


def test_load_tokenizer_specs(tmp_path: Path, word_tokenizer: Path) -> None:
    assert load_tokenizer(word_tokenizer).get_vocab_size() == 28
    assert load_tokenizer(word_tokenizer.parent).get_vocab_size() == 28
    with pytest.raises(DataError, match=r"holds no tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_tokenizer(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    with pytest.raises(DataError, match=r"not a valid tokenizer.json"):
        load_tokenizer(broken)


def test_gpt2_offline_fails_fast_with_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # empty cache

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"pass a local tokenizer.json"):
        tokmod.load_tokenizer("gpt2")
    assert time.perf_counter() - start < 10


def test_fingerprint_follows_the_definition_not_the_formatting(tmp_path: Path, corpus: Path) -> None:
    train_tokenizer([corpus], tmp_path / "a", vocab_size=300)
    path = tmp_path / "a" / "tokenizer.json"
    tok = load_tokenizer(path)
    (tmp_path / "compact.json").write_text(tok.to_str())
    (tmp_path / "pretty.json").write_text(tok.to_str(pretty=True))
    prints = {tokmod.fingerprint(load_tokenizer(tmp_path / name)) for name in ("compact.json", "pretty.json")}
    assert prints == {tokmod.fingerprint(tok)}
    train_tokenizer([corpus], tmp_path / "b", vocab_size=280)
    assert tokmod.fingerprint(load_tokenizer(tmp_path / "b")) not in prints

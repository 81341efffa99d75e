"""Fixtures for the data tests: a word-level tokenizer whose ids can be computed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from tests.data.datahelpers import ID


@pytest.fixture
def word_tokenizer(tmp_path: Path) -> Path:
    tok = Tokenizer(models.WordLevel(vocab=ID, unk_token="<|padding|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "wordtok" / "tokenizer.json"
    path.parent.mkdir()
    tok.save(str(path))
    return path

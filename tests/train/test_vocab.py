"""model.n_vocab from the data where the user did not set it (`neo.train.vocab`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from neo.config import compose
from neo.errors import ConfigError
from neo.train.session import build_session
from neo.train.vocab import fit_vocab, pinned_vocab


def test_a_larger_tokenizer_sets_n_vocab_unless_the_user_pinned_it(
    tiny_dataset: dict[str, Path], tmp_path: Path
) -> None:
    small = compose(["model=tiny", "model.n_vocab=128", f"data.dir={tiny_dataset['train']}"])
    fitted, note = fit_vocab(small, pinned=False)
    assert fitted.model.n_vocab == 384 and "300 tokens" in note  # 300-token tokenizer, rounded up to 128s
    assert fit_vocab(fitted, pinned=False) == (fitted, None)  # already large enough: unchanged
    kept, none = fit_vocab(small, pinned=True)
    assert kept.model.n_vocab == 128 and none is None
    with pytest.raises(ConfigError, match=r"300-token vocabulary but model\.n_vocab=128"):
        build_session(
            kept, tmp_path
        )  # about to train: a pinned vocabulary that is too small is refused with both numbers


def test_pinned_vocab_reads_the_command_line() -> None:
    assert pinned_vocab(["model=tiny", "model.n_vocab=512"]) and pinned_vocab(["+model.n_vocab=5"])
    assert not pinned_vocab(["model=tiny", "model.n_vocab_extra=1", "train.steps=3"])

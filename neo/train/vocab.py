"""The model's vocabulary from the data: where the user did not set `model.n_vocab`, a dataset encoded with a larger
tokenizer than the preset's vocabulary sets it (instead of refusing the run)."""

from __future__ import annotations

import dataclasses

from neo.config import NeoConfig
from neo.errors import DataError

MULTIPLE = 128  # embedding and logits matmuls tile better; the extra rows are never a sampled token


def pinned_vocab(overrides: list[str]) -> bool:
    """Whether the command line sets model.n_vocab itself."""
    return any(o.split("=", 1)[0].lstrip("+~") == "model.n_vocab" for o in overrides)


def fit_vocab(cfg: NeoConfig, pinned: bool) -> tuple[NeoConfig, str | None]:
    """`cfg` with model.n_vocab raised to the training data's vocabulary (rounded up to a multiple of 128) when the
    data needs more and the user did not pin it; and a note saying so. A pinned n_vocab that is too small is left for
    the data check to refuse with both numbers."""
    from neo.data.card import dataset_card

    if pinned or not cfg.data.train_datasets():
        return cfg, None
    try:
        needed = max(dataset_card(ds.dir).vocab_size for ds in cfg.data.train_datasets())
    except DataError:  # reported, in its turn, by the session's data check
        return cfg, None
    if needed <= cfg.model.n_vocab:
        return cfg, None
    n_vocab = -(-needed // MULTIPLE) * MULTIPLE
    model = dataclasses.replace(cfg.model, n_vocab=n_vocab)
    note = f"model.n_vocab={n_vocab}: the data's tokenizer has {needed} tokens (the preset had {cfg.model.n_vocab})"
    return dataclasses.replace(cfg, model=model), note

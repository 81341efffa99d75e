"""A tiny encoded dataset (train + eval), made once per test session from generated text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

WORDS = [
    "the",
    "model",
    "learns",
    "to",
    "predict",
    "next",
    "token",
    "from",
    "text",
    "data",
    "and",
    "every",
    "layer",
    "adds",
    "a",
    "little",
    "more",
]


def _documents(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(40, 120)))) + "." for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"train": dir, "eval": dir, "tokenizer": tokenizer.json} written by the real data tools."""
    from neo.data.encode import encode_dataset
    from neo.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("tiny_dataset")
    for split, n, seed in (("train_txt", 60, 0), ("eval_txt", 8, 1)):
        (root / split).mkdir()
        for i, doc in enumerate(_documents(n, seed)):
            (root / split / f"{i:03d}.txt").write_text(doc)
    tok = train_tokenizer([root / "train_txt"], root / "tok", 300, min_frequency=1)
    encode_dataset([root / "train_txt"], root / "train", tok.path, mode="documents", name="train")
    encode_dataset([root / "eval_txt"], root / "eval", tok.path, mode="documents", name="eval")
    return {"train": root / "train", "eval": root / "eval", "tokenizer": Path(tok.path)}


@pytest.fixture
def tiny_overrides() -> Callable[..., list[str]]:
    """`tiny_overrides(data, run_dir, *extra)`: a model and run small enough to train in seconds on CPU."""
    return _tiny_overrides


def _tiny_overrides(data: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    return [
        "model=tiny",
        "model.n_vocab=320",
        "model.n_ctx=32",
        "model.n_embd=32",
        "model.n_head=4",
        "model.window_size=8",
        "train.batch_size=8",
        "train.steps=6",
        "train.log_every=1",
        "train.checkpoint_every=3",
        "train.eval_steps=2",
        "train.async_checkpointing=false",
        "optimizer.warmup_steps=2",
        "optimizer.lr=3e-3",
        f"data.dir={data['train']}",
        f"data.eval_dir={data['eval']}",
        f"train.run_dir={run_dir}",
        *extra,
    ]

"""Text in, text out: load a run's parameters and tokenizer and generate with the model's KV-cache decoder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from neo.errors import CheckpointError
from neo.model.config import ModelConfig


@dataclass
class Loaded:
    model: ModelConfig
    params: Any
    tokenizer: Tokenizer
    eos_id: int | None


def load_for_sampling(source: str | Path) -> Loaded:
    """Parameters only (no optimizer state) and the tokenizer stored beside them."""
    from neo.data.tokenizer import eos_id, load_tokenizer
    from neo.train.checkpoint import load_run

    source = Path(source)
    if (source / "config.json").is_file() and not (source / "config.yaml").is_file():
        from neo.train.convert import load_hf_dir

        cfg_model, params = load_hf_dir(source)
    else:
        cfg, params, _ = load_run(source)
        cfg_model = cfg.model
    tok_path = source / "tokenizer.json"
    if not tok_path.is_file():
        raise CheckpointError(f"{source} has no tokenizer.json; copy the tokenizer used for training into it")
    tokenizer = load_tokenizer(tok_path)
    return Loaded(model=cfg_model, params=params, tokenizer=tokenizer, eos_id=eos_id(tokenizer))


def sample_texts(
    loaded: Loaded,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    stop_at_eos: bool = True,
    on_text: Callable[[int, str], None] | None = None,
) -> list[str]:
    """Continuations of each prompt (text only, prompt excluded). `on_text(row, piece)` streams new text."""
    from neo.model.decode import generate

    tok = loaded.tokenizer
    encoded = [tok.encode(p).ids for p in prompts]
    if any(not ids for ids in encoded):
        encoded = [ids or [loaded.eos_id or 0] for ids in encoded]  # an empty prompt starts from end-of-text
    so_far: list[list[int]] = [[] for _ in prompts]
    emitted = ["" for _ in prompts]

    def on_token(row: int, token: int) -> None:
        so_far[row].append(token)
        text = tok.decode(so_far[row])
        if on_text is not None and not text.endswith("\ufffd") and len(text) > len(emitted[row]):
            on_text(row, text[len(emitted[row]) :])
            emitted[row] = text

    outputs = generate(
        loaded.model,
        loaded.params,
        encoded,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=loaded.eos_id if stop_at_eos else None,
        seed=seed,
        on_token=on_token,
    )
    texts = []
    for row, ids in enumerate(outputs):
        if stop_at_eos and loaded.eos_id is not None and loaded.eos_id in ids:
            ids = ids[: ids.index(loaded.eos_id)]
        text = tok.decode(ids)
        if on_text is not None and len(text) > len(emitted[row]):
            on_text(row, text[len(emitted[row]) :])
        texts.append(text)
    return texts

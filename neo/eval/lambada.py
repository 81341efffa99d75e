"""LAMBADA last-word accuracy from a local file (no download): can the model finish the passage's last word?

Each line of the .jsonl file holds {"text": ...}. The target is the last word with its leading space; the model
must predict every one of its tokens greedily given the passage before it (as GPT-2 and GPT-Neo reported it).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tokenizers import Tokenizer

from neo import storage
from neo.errors import DataError
from neo.model.config import ModelConfig
from neo.model.transformer import GPTNeo


def read_examples(path: str | os.PathLike[str], tokenizer: Tokenizer, n_ctx: int) -> list[tuple[list[int], list[int]]]:
    """(context ids, target ids) per passage; long contexts keep their last tokens."""
    path = os.fspath(path)
    if not storage.isfile(path):
        raise DataError(f'{path} does not exist; pass a LAMBADA .jsonl file (one {{"text": ...}} per line)')
    examples = []
    for lineno, line in enumerate(storage.read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"].strip()
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{path}:{lineno} is not a JSON object with a 'text' field") from None
        context, _, word = text.rpartition(" ")
        if not context:
            continue
        target = tokenizer.encode(" " + word).ids
        ids = tokenizer.encode(context).ids[-(n_ctx - len(target)) :]
        examples.append((ids, target))
    if not examples:
        raise DataError(f"{path} holds no passages")
    return examples


def lambada(
    cfg: ModelConfig, params: Any, tokenizer: Tokenizer, path: str | os.PathLike[str], batch_size: int = 8
) -> dict:
    """Accuracy (every target token is the argmax) and perplexity of the target words."""
    model = GPTNeo(cfg)
    forward = jax.jit(lambda p, t: model.apply({"params": p}, t))
    examples = read_examples(path, tokenizer, cfg.n_ctx)
    correct, nll, n_tokens = 0, 0.0, 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        tokens = np.zeros((batch_size, cfg.n_ctx), np.int32)  # right padding: causal, so it never leaks back
        for row, (ctx, tgt) in enumerate(chunk):
            seq = ctx + tgt
            tokens[row, : len(seq) - 1] = seq[:-1]
        logp = np.asarray(jax.nn.log_softmax(forward(params, jnp.asarray(tokens)), axis=-1))
        for row, (ctx, tgt) in enumerate(chunk):
            positions = np.arange(len(ctx) - 1, len(ctx) - 1 + len(tgt))
            predicted = logp[row, positions].argmax(-1)
            correct += int((predicted == np.asarray(tgt)).all())
            nll -= float(logp[row, positions, tgt].sum())
            n_tokens += len(tgt)
    return {
        "lambada_acc": correct / len(examples),
        "lambada_ppl": math.exp(nll / n_tokens),
        "lambada_examples": len(examples),
    }

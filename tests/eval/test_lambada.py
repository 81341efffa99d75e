"""LAMBADA scoring: the batched, padded scorer equals a plain per-passage recomputation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from neo.errors import DataError
from neo.eval.lambada import lambada, read_examples
from neo.model.config import ModelConfig
from neo.model.params import init_params
from neo.model.transformer import GPTNeo

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "far", "away", "home"]


def _tokenizer() -> Tokenizer:
    vocab = {w: i for i, w in enumerate(WORDS)} | {f"Ġ{w}": i + len(WORDS) for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab | {"<|endoftext|>": 20}, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def test_batched_scores_equal_a_plain_recomputation(tmp_path: Path) -> None:
    cfg = ModelConfig(n_vocab=24, n_ctx=16, n_embd=32, n_head=4, n_layer=2, attention_types=[[["global", "local"], 1]])
    params = init_params(cfg, seed=3)
    tok = _tokenizer()
    rng = np.random.default_rng(0)
    passages = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 20)))) for _ in range(11)]
    path = tmp_path / "lambada.jsonl"
    path.write_text("\n".join(json.dumps({"text": p}) for p in passages))
    got = lambada(cfg, params, tok, path, batch_size=4)

    model = GPTNeo(cfg)
    correct, nll, n = 0, 0.0, 0
    for ctx, tgt in read_examples(path, tok, cfg.n_ctx):
        seq = jnp.asarray([ctx + tgt[:-1]], jnp.int32)
        logp = np.asarray(jax.nn.log_softmax(model.apply({"params": params}, seq), axis=-1))[0]
        rows = logp[len(ctx) - 1 :]
        correct += int((rows.argmax(-1) == np.asarray(tgt)).all())
        nll -= float(rows[np.arange(len(tgt)), tgt].sum())
        n += len(tgt)
    assert got["lambada_examples"] == 11
    assert got["lambada_acc"] == pytest.approx(correct / 11)
    assert got["lambada_ppl"] == pytest.approx(math.exp(nll / n), rel=1e-5)


def test_bad_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_examples(tmp_path / "missing.jsonl", _tokenizer(), 16)
    (tmp_path / "bad.jsonl").write_text("not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1"):
        read_examples(tmp_path / "bad.jsonl", _tokenizer(), 16)

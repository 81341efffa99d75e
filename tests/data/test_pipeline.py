"""The training input pipeline: sampling modes, determinism, exact resume, mixing, rows split over hosts, MLM."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from neo.data import pipeline
from neo.data.config import DataConfig, DatasetConfig
from neo.data.encode import encode_dataset
from neo.data.pipeline import MlmOptions, check_data, eval_batches, mask_tokens, mlm_train_batches, train_batches
from neo.errors import ConfigError, DataError
from tests.data.datahelpers import write_jsonl

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _docs(n: int, seed: int, lo: int = 1, hi: int = 12) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(list(LETTERS), size=int(rng.integers(lo, hi)))) for _ in range(n)]


def _encode(tmp_path: Path, tok: Path, name: str, docs: list[str], **kw) -> Path:
    src = tmp_path / f"{name}_src"
    src.mkdir()
    for i in range(0, len(docs), 50):
        write_jsonl(src / f"{i:05d}.jsonl", docs[i : i + 50])
    out = tmp_path / name
    encode_dataset([src], out, tok, **kw)
    return out


def take(it, n: int) -> list[np.ndarray]:
    return list(itertools.islice(it, n))


@pytest.fixture(params=["cached", "streamed"])
def reading(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test both on the in-memory path for small datasets and on the streaming path large ones take."""
    if request.param == "streamed":
        monkeypatch.setattr(pipeline, "_CACHE_TOKENS", 0)
    return request.param


def test_chunks_hand_computed(tmp_path: Path, word_tokenizer: Path, reading: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "a.jsonl", ["a b c d e", "f g h"])  # stream: 2..6 0 7 8 9 0  (10 tokens)
    out = tmp_path / "ds"
    encode_dataset([src], out, word_tokenizer, mode="chunks", chunk_size=4)
    batches = take(train_batches(DataConfig(dir=str(out)), n_ctx=2, batch_size=1, seed=0), 4)
    # 10 tokens -> 3 samples of 3 per epoch (the epoch's last token is left out), then the stream repeats
    assert [b.tolist() for b in batches] == [[[2, 3, 4]], [[5, 6, 0]], [[7, 8, 9]], [[2, 3, 4]]]
    assert batches[0].dtype == np.int32
    resumed = take(train_batches(DataConfig(dir=str(out)), n_ctx=2, batch_size=1, seed=0, start_step=2), 2)
    assert [b.tolist() for b in resumed] == [[[7, 8, 9]], [[2, 3, 4]]]  # skips by arithmetic on record lengths


def test_documents_fixed_and_random_windows(tmp_path: Path, word_tokenizer: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "a.jsonl", ["a b c d", "e f g h", "i j k l", "m n o p"])
    out = tmp_path / "ds"
    encode_dataset([src], out, word_tokenizer)  # records: 4 letters + EOS
    docs = {tuple(r) for r in ([2, 3, 4, 5, 0], [6, 7, 8, 9, 0], [10, 11, 12, 13, 0], [14, 15, 16, 17, 0])}
    fixed = DataConfig(dir=str(out), mode="documents_fixed", stitch=2, shuffle_buffer=1)
    got = [b[0].tolist() for b in take(train_batches(fixed, n_ctx=6, batch_size=1, seed=0), 2)]
    assert got == [[2, 3, 4, 5, 0, 6, 7], [10, 11, 12, 13, 0, 14, 15]]  # first n_ctx+1 of each stitched pair
    rand = DataConfig(dir=str(out), mode="documents_random", stitch=2, shuffle_buffer=4)
    samples = [b[0].tolist() for b in take(train_batches(rand, n_ctx=3, batch_size=1, seed=5), 200)]
    starts = set()
    for s in samples:  # every window is a contiguous slice of two stitched documents
        found = [i for a in docs for b in docs if a != b for i in range(7) if list(a + b)[i : i + 4] == s]
        assert found, s
        starts.update(found)
    assert len(starts) > 3  # windows really move


@pytest.mark.parametrize("mode", ["chunks", "documents_fixed", "documents_random"])
def test_deterministic_and_exactly_resumable(tmp_path: Path, word_tokenizer: Path, mode: str, reading: str) -> None:
    out = _encode(tmp_path, word_tokenizer, "ds", _docs(300, 0, 4, 20), files_per=60)
    cfg = DataConfig(dir=str(out), mode=mode, stitch=3, shuffle_buffer=16)
    full = take(train_batches(cfg, n_ctx=9, batch_size=4, seed=3), 200)  # spans several epochs
    again = take(train_batches(cfg, n_ctx=9, batch_size=4, seed=3), 200)
    assert all((a == b).all() for a, b in zip(full, again, strict=True))
    for start in (1, 37, 150):
        resumed = take(train_batches(cfg, n_ctx=9, batch_size=4, seed=3, start_step=start), 200 - start)
        assert all((a == b).all() for a, b in zip(full[start:], resumed, strict=True)), start
    other = take(train_batches(cfg, n_ctx=9, batch_size=4, seed=4), 200)
    if mode != "chunks":  # chunks read in order; the seed changes document order and windows
        assert any((a != b).any() for a, b in zip(full, other, strict=True))


def test_mixing_follows_weights_and_resumes(tmp_path: Path, word_tokenizer: Path) -> None:
    a = _encode(tmp_path, word_tokenizer, "a", ["a b c"] * 40, mode="chunks", chunk_size=3)  # only 'a'-'c'
    b = _encode(tmp_path, word_tokenizer, "b", ["x y z"] * 40, mode="chunks", chunk_size=3)  # only 'x'-'z'
    cfg = DataConfig(dir=str(a), weight=1.0, datasets=[DatasetConfig(dir=str(b), weight=3.0)])
    batches = take(train_batches(cfg, n_ctx=3, batch_size=10, seed=1), 1200)  # 12k samples, two mixing blocks
    # samples from b hold only ids {0, 25, 26, 27}; samples from a only {0, 2, 3, 4}
    from_b = sum(int(np.isin(batch, [25, 26, 27]).any(axis=1).sum()) for batch in batches[:1000])
    assert abs(from_b / 10_000 - 0.75) < 0.02
    resumed = take(train_batches(cfg, n_ctx=3, batch_size=10, seed=1, start_step=1101), 99)
    assert all((x == y).all() for x, y in zip(batches[1101:], resumed, strict=True))


@pytest.mark.parametrize("mode", ["chunks", "documents_fixed", "documents_random"])
@pytest.mark.parametrize("files_per", [25, 400])  # 8 shards / 1 shard: fewer shards than hosts is fine
def test_any_split_of_the_rows_reads_the_global_batch(
    tmp_path: Path, word_tokenizer: Path, files_per: int, mode: str, reading: str
) -> None:
    """Hosts keep disjoint rows of one global batch: 1, 2 or 4 hosts, from step 0 or a resume, read the same data."""
    docs = [f"{LETTERS[i % 26]} {LETTERS[(i // 26) % 26]} {LETTERS[(i // 676) % 26]}" for i in range(200)]
    out = _encode(tmp_path, word_tokenizer, "ds", docs, files_per=files_per)
    other = _encode(tmp_path, word_tokenizer, "other", _docs(50, 7, 4, 9), files_per=files_per)
    for cfg in (
        DataConfig(dir=str(out), mode=mode, stitch=2, shuffle_buffer=8),
        DataConfig(dir=str(out), mode=mode, stitch=2, datasets=[DatasetConfig(dir=str(other), weight=2.0)]),
    ):
        for start in (0, 7):
            whole = take(train_batches(cfg, n_ctx=3, batch_size=8, seed=1, start_step=start), 30)
            assert whole[0].shape == (8, 4)
            for hosts in (2, 4):
                per = 8 // hosts
                parts = [
                    take(
                        train_batches(
                            cfg, n_ctx=3, batch_size=8, seed=1, start_step=start, rows=range(h * per, (h + 1) * per)
                        ),
                        30,
                    )
                    for h in range(hosts)
                ]
                for step, batch in enumerate(whole):
                    np.testing.assert_array_equal(np.concatenate([p[step] for p in parts]), batch)
    mlm = MlmOptions(mask_id=1, mask_prob=0.5)
    kw = {"mlm": mlm, "n_ctx": 3, "batch_size": 4, "seed": 0, "vocab_size": 40}
    whole = take(mlm_train_batches(DataConfig(dir=str(out)), **kw), 5)
    halves = [take(mlm_train_batches(DataConfig(dir=str(out)), rows=r, **kw), 5) for r in (range(0, 2), range(2, 4))]
    for step, batch in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([h[step].inputs for h in halves]), batch.inputs)
        np.testing.assert_array_equal(np.concatenate([h[step].labels for h in halves]), batch.labels)


def test_preconditions_checked_up_front(tmp_path: Path, word_tokenizer: Path) -> None:
    out = _encode(tmp_path, word_tokenizer, "ds", ["a b", "c d e f"] * 3, minimum_size=2)  # shortest record: 3 tokens
    with pytest.raises(ConfigError, match=r"data.stitch=3 or more"):
        next(train_batches(DataConfig(dir=str(out), mode="documents_random", stitch=2), n_ctx=8, batch_size=1, seed=0))
    check_data(DataConfig(dir=str(out), mode="documents_random", stitch=3), n_ctx=8)
    with pytest.raises(ConfigError, match=r"model.n_vocab"):
        check_data(DataConfig(dir=str(out)), n_ctx=2, vocab_size=10)
    with pytest.raises(ConfigError, match=r"data.dir is empty"):
        next(train_batches(DataConfig(), n_ctx=8, batch_size=1, seed=0))
    with pytest.raises(DataError, match=r"dataset.yaml"):
        next(train_batches(DataConfig(dir=str(tmp_path)), n_ctx=8, batch_size=1, seed=0))
    with pytest.raises(ConfigError, match="not a contiguous part of a batch of 3"):
        next(train_batches(DataConfig(dir=str(out)), n_ctx=2, batch_size=3, seed=0, rows=range(2, 5)))
    with pytest.raises(DataError, match="no chunks sample"):
        next(train_batches(DataConfig(dir=str(out)), n_ctx=100, batch_size=1, seed=0))


@pytest.mark.parametrize(
    "cfg,match",
    [
        (DataConfig(mode="random"), "data.mode"),
        (DataConfig(stitch=0), "data.stitch"),
        (DataConfig(weight=0), "weight"),
        (DataConfig(datasets=[DatasetConfig(dir="")]), "data.datasets"),
    ],
)
def test_config_validation(cfg: DataConfig, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cfg.validate()


def test_eval_batches_are_finite_and_repeatable(tmp_path: Path, word_tokenizer: Path) -> None:
    out = _encode(tmp_path, word_tokenizer, "ev", _docs(100, 1), mode="chunks", chunk_size=7)
    cfg = DataConfig(eval_dir=str(out))
    first = list(eval_batches(cfg, n_ctx=7, batch_size=4))
    second = list(eval_batches(cfg, n_ctx=7, batch_size=4))
    assert len(first) == len(second) > 3 and all((a == b).all() for a, b in zip(first, second, strict=True))
    assert first[0].shape == (4, 8)
    hosts = [list(eval_batches(cfg, n_ctx=7, batch_size=4, rows=range(h * 2, h * 2 + 2))) for h in range(2)]
    assert hosts[0][0].shape == (2, 8)
    for step, batch in enumerate(first):
        np.testing.assert_array_equal(np.concatenate([h[step] for h in hosts]), batch)
    with pytest.raises(ConfigError, match="eval_dir"):
        next(eval_batches(DataConfig(), n_ctx=7, batch_size=4))


def test_mlm_statistics() -> None:
    mlm = MlmOptions(mask_id=1, mask_prob=0.15, same_token_prob=0.1, random_token_prob=0.1, mask_ignore_ids=(0,))
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, 1000, size=(64, 2049)).astype(np.int32)
    tokens[:, ::10] = 0  # never selected
    batch = mask_tokens(tokens, mlm, 1000, np.random.default_rng(1))
    sel = batch.mask
    maskable = tokens != 0
    assert not sel[~maskable].any()
    assert abs(sel.sum() / maskable.sum() - 0.15) < 0.005
    assert (batch.labels[sel] == tokens[sel]).all() and (batch.labels[~sel] == -1).all()  # labels not inverted
    assert (batch.inputs[~sel] == tokens[~sel]).all()
    masked = (batch.inputs[sel] == 1).mean()
    unchanged = (batch.inputs[sel] == tokens[sel]).mean()
    assert abs(masked - 0.8) < 0.01
    assert abs(unchanged - (0.1 + 0.1 / 1000)) < 0.01  # kept, plus random draws that hit the same id
    with_cls = mask_tokens(tokens, MlmOptions(mask_id=1, cls_token_id=5, mask_prob=1.0), 1000, rng)
    assert (with_cls.inputs[:, 0] == 5).all() and not with_cls.mask[:, 0].any()
    assert (with_cls.labels[:, 1:] == tokens[:, :-1]).all()
    with pytest.raises(ConfigError, match="mlm_mask_id"):
        mask_tokens(tokens, MlmOptions(mask_id=-1), 1000, rng)


def test_mlm_options_from_model_config() -> None:
    from neo.model.config import ModelConfig

    model = ModelConfig(mlm_training=True, mlm_mask_id=3, mlm_mask_ignore_ids=[0], mlm_mask_prob=0.2)
    opts = MlmOptions.from_model(model)
    assert (opts.mask_id, opts.mask_prob, opts.mask_ignore_ids, opts.cls_token_id) == (3, 0.2, (0,), -1)


def test_mlm_batches_resume(tmp_path: Path, word_tokenizer: Path) -> None:
    out = _encode(tmp_path, word_tokenizer, "ds", _docs(100, 2), mode="chunks", chunk_size=7)
    cfg = DataConfig(dir=str(out))
    mlm = MlmOptions(mask_id=1, mask_prob=0.5)
    full = take(mlm_train_batches(cfg, mlm=mlm, n_ctx=7, batch_size=2, seed=0, vocab_size=28), 30)
    resumed = take(mlm_train_batches(cfg, mlm=mlm, n_ctx=7, batch_size=2, seed=0, vocab_size=28, start_step=13), 17)
    for a, b in zip(full[13:], resumed, strict=True):
        assert (a.inputs == b.inputs).all() and (a.labels == b.labels).all()
    assert any(b.mask.any() for b in full)

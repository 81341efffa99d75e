"""The decoding cache: a run sampled twice reads its decoding layout from one file the second time, equal to what the
restore and re-layout give; a rewritten checkpoint, a torn file and the off switch all fall back to the restore."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from neo.convert import write_run
from neo.infer import decoding_cache
from neo.infer.sampling import load_for_sampling
from neo.model.decode import for_decoding, generate
from tests.model.conftest import params_for, small


def _run(path: Path, seed: int) -> Path:
    from tokenizers import Tokenizer, models

    cfg = small(n_vocab=64, n_layer=2, attention_types=[[["global", "local"], 1]])
    write_run(str(path), cfg, params_for(cfg, seed=seed), Path("."), None)
    Tokenizer(models.WordLevel({"a": 0, "<|endoftext|>": 1}, unk_token="a")).save(str(path / "tokenizer.json"))
    return path


def _restored(run: Path):
    """The run's parameters as a restore and `for_decoding` give them, with the cache off."""
    loaded = load_for_sampling(run)
    return for_decoding(loaded.model, loaded.params)


def _equal(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NEO_DECODING_CACHE", "1")  # tests/conftest.py turns it off for every other test
    return tmp_path / "cache" / "decoding"


def test_the_second_load_reads_the_file_and_decodes_the_same(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run(tmp_path / "run", seed=0)
    expected_cfg, expected = _restored(run)
    first = load_for_sampling(run, decoding=True)
    assert len(list(cache_dir.glob("*.safetensors"))) == 1

    def no_restore(*args: object, **kwargs: object) -> None:
        raise AssertionError("restored although the decoding cache has this checkpoint")

    monkeypatch.setattr("neo.train.checkpoint.Checkpoints", no_restore)  # nor asks orbax for the latest step
    second = load_for_sampling(run, decoding=True)
    assert first.model == second.model == expected_cfg
    assert _equal(first.params, expected) and _equal(second.params, expected)
    prompts = [[2, 3, 4], [5]]
    greedy = generate(expected_cfg, expected, prompts, max_new_tokens=6, temperature=0)
    assert generate(second.model, second.params, prompts, max_new_tokens=6, temperature=0) == greedy


def test_a_rewritten_checkpoint_is_never_read_stale(tmp_path: Path, cache_dir: Path) -> None:
    run = _run(tmp_path / "run", seed=0)
    old = load_for_sampling(run, decoding=True).params
    shutil.rmtree(run)
    _run(run, seed=1)  # the same path and step, other weights
    new = load_for_sampling(run, decoding=True).params
    assert _equal(new, _restored(run)[1]) and not _equal(new, old)


def test_a_torn_file_and_the_off_switch_fall_back_to_the_restore(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run(tmp_path / "run", seed=0)
    expected = _restored(run)[1]
    load_for_sampling(run, decoding=True)
    (cached,) = cache_dir.glob("*.safetensors")
    cached.write_bytes(cached.read_bytes()[:1000])  # torn (not by the cache's own atomic write)
    assert _equal(load_for_sampling(run, decoding=True).params, expected)
    shutil.rmtree(cache_dir)
    monkeypatch.setenv("NEO_DECODING_CACHE", "0")
    assert _equal(load_for_sampling(run, decoding=True).params, expected)
    assert not cache_dir.exists()


def test_only_the_newest_files_are_kept(cache_dir: Path) -> None:
    params = {"h_0": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "wte": np.ones(4, np.float32)}
    paths = [cache_dir / f"{i}.safetensors" for i in range(decoding_cache.KEEP + 2)]
    for i, path in enumerate(paths):
        decoding_cache.write(path, params)
        os.utime(path, (1_000 + i, 1_000 + i))  # oldest first
    decoding_cache.write(paths[-1], params)  # prunes
    assert sorted(cache_dir.glob("*.safetensors")) == sorted(paths[-decoding_cache.KEEP :])
    assert _equal(decoding_cache.read(paths[-1]), params)


def test_a_newer_step_is_restored_not_served_from_the_older_steps_file(tmp_path: Path, cache_dir: Path) -> None:
    run = _run(tmp_path / "run", seed=0)
    load_for_sampling(run, decoding=True)
    (step,) = [p for p in (run / "checkpoints").iterdir() if p.name.isdigit()]
    shutil.copytree(step, run / "checkpoints" / str(int(step.name) + 7))  # a later committed step
    (run / "checkpoints" / f"{int(step.name) + 9}.orbax-checkpoint-tmp-1").mkdir()  # and an unfinished one
    load_for_sampling(run, decoding=True)
    assert len(list(cache_dir.glob("*.safetensors"))) == 2


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_quantized_weights_are_kept_apart_and_read_back_quantized(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, weights: str
) -> None:
    from neo.model.quantize import held_as, quantize_params

    run = _run(tmp_path / "run", seed=3)
    expected_cfg, restored = _restored(run)
    expected = quantize_params(restored, weights)
    plain = load_for_sampling(run, decoding=True)  # float32: a file of its own
    first = load_for_sampling(run, decoding=True, weights=weights)
    files = list(cache_dir.glob("*.safetensors"))
    assert len(files) == 2 and held_as(plain.params) == "float32" and held_as(first.params) == weights
    monkeypatch.setattr("neo.train.checkpoint.Checkpoints", lambda *a, **k: pytest.fail("restored, not read"))
    second = load_for_sampling(run, decoding=True, weights=weights)
    assert held_as(second.params) == weights and _equal(second.params, expected)
    assert sum(f.stat().st_size for f in files) < 2 * max(f.stat().st_size for f in files)  # one file is smaller
    prompts = [[2, 3, 4], [5]]
    greedy = generate(expected_cfg, restored, prompts, max_new_tokens=6, temperature=0, weights=weights)
    assert generate(second.model, second.params, prompts, max_new_tokens=6, temperature=0) == greedy  # as held
    with pytest.raises(Exception, match="held as"):  # another kind than the params hold is refused
        generate(
            second.model,
            second.params,
            prompts,
            max_new_tokens=1,
            weights="float32" if weights != "float32" else "int8",
        )

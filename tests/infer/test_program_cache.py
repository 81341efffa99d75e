"""The program cache: a second process-like start (the in-process programs forgotten) decodes from the stored
programs without tracing the model, to the same tokens; a torn file, another shape and the off switch trace anew."""

from __future__ import annotations

from pathlib import Path

import jax
import pytest

from neo.model import decode
from tests.model.conftest import params_for, small

PROMPTS = [[3, 5, 7, 9, 11], [2, 4]]


@pytest.fixture
def programs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NEO_PROGRAM_CACHE", "1")  # tests/conftest.py turns it off for every other test
    decode._STEPS.clear()
    yield tmp_path / "cache" / "programs"
    decode._STEPS.clear()


def _generate(cfg, params, **kwargs) -> list[list[int]]:
    decode._STEPS.clear()  # as a new process: only the files remain
    return decode.generate(cfg, params, PROMPTS, max_new_tokens=6, **kwargs)


def _no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("traced the model although the program cache holds it")

    monkeypatch.setattr(jax.export, "export", refuse)


def test_a_second_start_decodes_from_the_stored_programs_to_the_same_tokens(
    programs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = small(n_vocab=64, n_layer=2, attention_types=[[["global", "local"], 1]])
    params = params_for(cfg, seed=0)
    greedy = _generate(cfg, params, temperature=0)
    sampled = _generate(cfg, params, temperature=0.9, top_k=20, seed=4)
    names = sorted(p.name.split("-")[0] for p in programs.glob("*.exported"))
    assert names == ["step", "step", "step", "step", "write_cache", "write_cache"]  # prefill/decode x greedy/sampled
    _no_tracing(monkeypatch)
    assert _generate(cfg, params, temperature=0) == greedy
    assert _generate(cfg, params, temperature=0.9, top_k=20, seed=4) == sampled


def test_a_torn_file_another_model_or_the_off_switch_trace_anew(programs: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = small(n_vocab=64)
    params = params_for(cfg, seed=1)
    want = _generate(cfg, params, temperature=0)
    for path in programs.glob("step-*"):
        path.write_bytes(path.read_bytes()[:100])  # torn: read fails, the program is traced and stored again
    assert _generate(cfg, params, temperature=0) == want
    assert all(p.stat().st_size > 100 for p in programs.glob("step-*"))
    before = set(programs.iterdir())
    wider = small(n_vocab=64, n_embd=64)  # another config: other keys, never a stale program
    _generate(wider, params_for(wider, seed=1), temperature=0)
    assert len(set(programs.iterdir()) - before) == 4  # prefill and decode step, and their cache writes
    off = programs.parent.parent / "off"
    monkeypatch.setenv("NEO_CACHE_DIR", str(off))
    monkeypatch.setenv("NEO_PROGRAM_CACHE", "0")
    assert _generate(cfg, params, temperature=0) == want
    assert not off.exists()


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_programs_over_low_precision_weights_are_stored_with_the_cpu_kernel_in_them(
    programs: Path, monkeypatch: pytest.MonkeyPatch, weights: str
) -> None:
    cfg = small(n_vocab=64)
    params = params_for(cfg, seed=2)
    want = _generate(cfg, params, temperature=0, weights=weights)
    stored = sorted(programs.glob("step-*"))
    assert len(stored) == 2
    for path in stored:
        text = jax.export.deserialize(bytearray(path.read_bytes())).mlir_module()
        assert f"neo_rows_times_{weights.replace('bfloat16', 'bf16')}" in text
    _no_tracing(monkeypatch)
    assert _generate(cfg, params, temperature=0, weights=weights) == want

"""neo through lm-evaluation-harness equals lm-eval's own Hugging Face backend on the same (converted) GPT-Neo.

Every request kind is compared on small local tasks: multiple choice and loglikelihood (per-request log-likelihoods
within 1e-4, the same greedy flags and accuracies), loglikelihood_rolling (per-document totals), generate_until (the
same greedy text). lm-eval's own command line runs "neo" through `python -m neo.eval`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import pytest

from tests.eval.conftest import TinyModel

pytestmark = [pytest.mark.hf, pytest.mark.harness]

TASKS = ["tiny_mc", "tiny_cloze", "tiny_ppl", "tiny_gen"]


def _evaluate(model: Any, tiny: TinyModel) -> dict[str, Any]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    return simple_evaluate(
        model=model,
        model_args=None if not isinstance(model, str) else {"pretrained": str(tiny.hf_dir), "dtype": "float32"},
        tasks=TASKS,
        task_manager=TaskManager(include_path=str(tiny.tasks), include_defaults=False),
        batch_size=4,
        device="cpu",
        log_samples=True,
        bootstrap_iters=0,
    )


@pytest.fixture(scope="module")
def both(tiny_model: TinyModel) -> dict[str, dict[str, Any]]:
    """The four tasks through neo (a converted run) and through lm-eval's `hf` backend (the HF directory)."""
    from neo.eval.harness import NeoLM

    return {
        "neo": _evaluate(NeoLM(run=str(tiny_model.run_dir), batch_size=4), tiny_model),
        "hf": _evaluate("hf", tiny_model),
    }


def _responses(results: dict[str, Any], task: str) -> list[Any]:
    return [s["resps"] for s in sorted(results["samples"][task], key=lambda s: s["doc_id"])]


@pytest.mark.parametrize("task", ["tiny_mc", "tiny_cloze"])
def test_loglikelihoods_and_accuracies_match_the_hf_backend(both: dict[str, dict[str, Any]], task: str) -> None:
    ours, theirs = _responses(both["neo"], task), _responses(both["hf"], task)
    assert len(ours) == len(theirs) == 12
    ours_ll = np.array([[r[0][0] for r in doc] for doc in ours])
    theirs_ll = np.array([[r[0][0] for r in doc] for doc in theirs])
    np.testing.assert_allclose(ours_ll, theirs_ll, atol=1e-4, rtol=0)
    assert [[r[0][1] for r in doc] for doc in ours] == [[r[0][1] for r in doc] for doc in theirs]
    assert np.ptp(ours_ll) > 1.0  # the requests really differ: equal numbers are not an accident of a flat model
    for metric in ("acc,none", "acc_norm,none") if task == "tiny_mc" else ("acc,none", "perplexity,none"):
        assert both["neo"]["results"][task][metric] == pytest.approx(both["hf"]["results"][task][metric], rel=1e-5)


def test_rolling_loglikelihoods_match_the_hf_backend(both: dict[str, dict[str, Any]]) -> None:
    ours = np.array([doc[0][0] for doc in _responses(both["neo"], "tiny_ppl")])
    theirs = np.array([doc[0][0] for doc in _responses(both["hf"], "tiny_ppl")])
    np.testing.assert_allclose(ours, theirs, atol=1e-3, rtol=1e-6)  # sums over up to 3 windows of 64 tokens
    assert ours.min() < -300  # documents longer than n_ctx = 64: several rolling windows each
    for metric in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert both["neo"]["results"]["tiny_ppl"][metric] == pytest.approx(both["hf"]["results"]["tiny_ppl"][metric])


def test_greedy_generations_match_the_hf_backend(both: dict[str, dict[str, Any]]) -> None:
    ours = [doc[0][0] for doc in _responses(both["neo"], "tiny_gen")]
    theirs = [doc[0][0] for doc in _responses(both["hf"], "tiny_gen")]
    assert ours == theirs
    assert all("." not in text for text in ours)  # cut at the task's stop string
    assert len({*ours}) > 1


def test_lm_eval_command_line_runs_the_neo_model(
    tiny_model: TinyModel, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import lm_eval.tasks

    from neo.eval.__main__ import main

    class LocalTasksOnly(lm_eval.tasks.TaskManager):  # lm-eval's own ~15,000 task YAMLs take 10-20 s to index
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**{**kwargs, "include_defaults": False})

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", LocalTasksOnly)
    argv = ["lm_eval", "--model", "neo", "--model_args", f"run={tiny_model.run_dir}", "--tasks", "tiny_mc"]
    argv += ["--include_path", str(tiny_model.tasks), "--limit", "4", "--batch_size", "4"]
    argv += ["--output_path", str(tmp_path / "out")]
    monkeypatch.setattr(sys, "argv", argv)
    main()
    assert "tiny_mc" in capsys.readouterr().out
    written = list((tmp_path / "out").rglob("results_*.json"))
    assert len(written) == 1
    results = json.loads(written[0].read_text())
    assert results["config"]["model"] == "neo" and 0.0 <= results["results"]["tiny_mc"]["acc,none"] <= 1.0


@pytest.mark.slow  # ~30 s of compiling on 2 cores; sharded scoring alone is in the default suite (test_scoring.py)
def test_sharded_neo_gives_the_single_device_answers(tiny_model: TinyModel, both: dict[str, dict[str, Any]]) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from neo.eval.harness import NeoLM

    lm = NeoLM(run=str(tiny_model.run_dir), batch_size=3, mesh="x:2,y:4", layout="batch:x,heads:y,mlp:y")
    assert lm.loaded.mesh is not None and lm.loaded.mesh.size == 8
    sharded = simple_evaluate(
        model=lm,
        tasks=["tiny_mc", "tiny_gen"],
        task_manager=TaskManager(include_path=str(tiny_model.tasks), include_defaults=False),
        limit=4,
        log_samples=True,
        bootstrap_iters=0,
    )
    mc = np.array([[r[0][0] for r in doc] for doc in _responses(sharded, "tiny_mc")])
    np.testing.assert_allclose(
        mc, [[r[0][0] for r in doc] for doc in _responses(both["neo"], "tiny_mc")[:4]], atol=1e-4
    )
    assert _responses(sharded, "tiny_gen") == _responses(both["neo"], "tiny_gen")[:4]

"""The batching engine against `neo sample`'s own decoder (`sample_texts`): requests that join a running batch at
different times, with prompts in different buckets, read exactly what `neo sample` prints for them."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from neo.serve.engine import Engine, Generation, QueueFull
from neo.train.sampling import sample_texts

# lengths 1..20: buckets 8, 16 and 32, and prompts longer than the local window (3)
PROMPTS = ["a", "hello world", "the quick brown fox", "abcdefghijklmnopqrst", "zz", "serve me"]


def ids(loaded: Any, text: str) -> list[int]:
    return loaded.tokenizer.encode(text).ids


def run_all(engine: Engine, gens: list[Generation]) -> list[str]:
    engine.submit(*gens)
    for g in gens:
        assert g.done.wait(60), "a generation did not finish"
    return [g.text for g in gens]


@pytest.fixture(scope="module")
def engine(loaded: Any) -> Any:
    engine = Engine(loaded, slots=4, queue_size=16)  # fewer slots than prompts: later ones join a running batch
    engine.start()
    yield engine
    engine.stop(drain=False, timeout=10)


def test_greedy_continuous_batching_equals_neo_sample(engine: Engine, loaded: Any) -> None:
    expected = [sample_texts(loaded, [p], max_new_tokens=24, temperature=0)[0] for p in PROMPTS]
    budgets = [24, 5, 24, 11, 24, 17]  # short ones finish early and free their slot for a waiting request
    gens = [Generation(ids(loaded, p), max_tokens=n, temperature=0.0) for p, n in zip(PROMPTS, budgets, strict=True)]
    got = run_all(engine, gens)
    for g, text, e, n in zip(gens, got, expected, budgets, strict=True):
        assert text == loaded.tokenizer.decode(g.token_ids) and e.startswith(text)
        assert (g.finish_reason, len(g.token_ids)) == ("length", n) or text == e  # cut at its budget, or all of it
    assert got[0] == expected[0] and got[2] == expected[2]  # the full budget: all of it
    assert engine.stats.decode_steps > 0 and engine.stats.busy_slot_steps > engine.stats.decode_steps  # batched


def test_seeded_sampling_equals_neo_sample(engine: Engine, loaded: Any) -> None:
    knobs = [dict(temperature=0.9, top_k=0, top_p=1.0), dict(temperature=1.3, top_k=5, top_p=0.9)]
    gens, expected = [], []
    for seed, prompt in enumerate(PROMPTS[:4]):
        k = knobs[seed % 2]
        expected.append(sample_texts(loaded, [prompt], max_new_tokens=20, seed=seed, **k)[0])
        gens.append(Generation(ids(loaded, prompt), max_tokens=20, seed=seed, **k))
    gens.append(Generation(ids(loaded, PROMPTS[4]), max_tokens=20, temperature=0.0))  # greedy beside sampled rows
    expected.append(sample_texts(loaded, [PROMPTS[4]], max_new_tokens=20, temperature=0)[0])
    assert run_all(engine, gens) == expected
    assert len(set(expected[:4])) == 4


def test_stop_strings_end_the_text_before_them(engine: Engine, loaded: Any) -> None:
    full = sample_texts(loaded, [PROMPTS[1]], max_new_tokens=24, temperature=0)[0]
    stop = full[5:7]
    g = Generation(ids(loaded, PROMPTS[1]), max_tokens=24, temperature=0.0, stop=[stop, "never there"])
    run_all(engine, [g])
    assert g.text == full[: full.index(stop)] and g.finish_reason == "stop"


def test_a_request_can_fill_the_context(engine: Engine, loaded: Any) -> None:
    prompt = "abcdefghijklmnopqrstuvwxy"  # 25 tokens, bucket 32: the row wraps around the 64-slot cache
    n = loaded.model.n_ctx - len(prompt)
    expected = sample_texts(loaded, [prompt], max_new_tokens=n, temperature=0, stop_at_eos=False)[0]
    g = Generation(ids(loaded, prompt), max_tokens=n, temperature=0.0)
    run_all(engine, [g])
    assert expected.startswith(g.text) and (len(g.token_ids) == n or g.finish_reason == "stop")


def test_a_cancelled_generation_frees_its_slot(engine: Engine, loaded: Any) -> None:
    started = threading.Event()

    def on_event(kind: str, payload: Any) -> None:
        if kind == "token":
            started.set()

    g = Generation(ids(loaded, "abc"), max_tokens=40, temperature=0.0, on_event=on_event)
    g2 = Generation(ids(loaded, "abc"), max_tokens=40, temperature=0.0)
    engine.submit(g)
    assert started.wait(30)
    g.cancel()
    assert g.done.wait(30) and g.finish_reason == "cancelled" and len(g.token_ids) < 40
    run_all(engine, [g2])
    assert g2.finish_reason in ("length", "stop")


def test_a_full_queue_refuses_at_once(loaded: Any) -> None:
    idle = Engine(loaded, slots=2, queue_size=3)  # not started: nothing leaves the queue
    idle.submit(*[Generation([1], max_tokens=1) for _ in range(5)])  # 2 free slots + 3 queued
    with pytest.raises(QueueFull, match="waiting"):
        idle.submit(Generation([1], max_tokens=1))
    assert idle.queue_depth() == 5 and idle.stats.requests_rejected == 1

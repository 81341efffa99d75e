"""The batching engine against `neo sample`'s own decoder (`sample_texts`): requests that join a running batch at
different times, with prompts in different buckets, read exactly what `neo sample` prints for them.

Prompts of at most 8 tokens and 16 new tokens share one compile with tests/serve/test_api.py."""

from __future__ import annotations

from typing import Any

import pytest

from neo.infer.sampling import sample_texts
from neo.serve.engine import Engine, Generation, QueueFull
from tests.serve.conftest import Server

# (prompt, max_tokens): buckets 8 and 16, prompts longer than the local window (3), budgets that end early and
# free a slot for a waiting request (6 requests, 4 slots)
CASES = [("a", 16), ("hello world", 16), ("the quick brown", 5), ("abcdefghijklmn", 16), ("zz", 16), ("serve me", 9)]


def ids(loaded: Any, text: str) -> list[int]:
    return loaded.tokenizer.encode(text).ids


def run_all(engine: Engine, gens: list[Generation]) -> list[str]:
    engine.submit(*gens)
    for g in gens:
        assert g.done.wait(120), "a generation did not finish"
    return [g.text for g in gens]


def test_greedy_continuous_batching_equals_neo_sample(server: Server, loaded: Any) -> None:
    expected = [sample_texts(loaded, [p], max_new_tokens=n, temperature=0)[0] for p, n in CASES]
    steps, busy = server.engine.stats.decode_steps, server.engine.stats.busy_slot_steps
    gens = [Generation(ids(loaded, p), max_tokens=n, temperature=0.0) for p, n in CASES]
    assert run_all(server.engine, gens) == expected
    assert all(g.finish_reason == "length" or len(g.token_ids) < n for g, (_, n) in zip(gens, CASES, strict=True))
    assert server.engine.stats.busy_slot_steps - busy > 2 * (server.engine.stats.decode_steps - steps)  # batched


def test_seeded_sampling_equals_neo_sample(server: Server, loaded: Any) -> None:
    knobs = [dict(temperature=0.9, top_k=0, top_p=1.0), dict(temperature=1.3, top_k=5, top_p=0.9)]
    prompts = ["a", "hello", "zz", "serve me"]
    gens, expected = [], []
    for seed, prompt in enumerate(prompts):
        k = knobs[seed % 2]
        expected.append(sample_texts(loaded, [prompt], max_new_tokens=16, seed=seed, **k)[0])
        gens.append(Generation(ids(loaded, prompt), max_tokens=16, seed=seed, **k))
    gens.append(Generation(ids(loaded, "abc"), max_tokens=16, temperature=0.0))  # greedy beside sampled rows
    expected.append(sample_texts(loaded, ["abc"], max_new_tokens=16, temperature=0)[0])
    assert run_all(server.engine, gens) == expected
    assert len(set(expected[:4])) == 4


def test_stop_strings_end_the_text_before_them(server: Server, loaded: Any) -> None:
    full = sample_texts(loaded, ["hello"], max_new_tokens=16, temperature=0, stop_at_eos=False)[0]
    stop = full[5:8]
    g = Generation(ids(loaded, "hello"), max_tokens=16, temperature=0.0, stop=[stop, full[4] + "never"])
    pieces: list[str] = []
    g.on_event = lambda kind, payload: pieces.append(payload.text if kind == "token" else payload)
    run_all(server.engine, [g])
    assert g.text == full[: full.index(stop)] and g.finish_reason == "stop"
    assert "".join(pieces[:-1]) == g.text and pieces[-1] == "stop"  # no streamed piece is taken back


@pytest.mark.slow  # two more compiles (bucket 32, a 128-entry cache for neo sample): ~10 s on 2 busy cores
def test_a_request_can_fill_the_context(server: Server, loaded: Any) -> None:
    prompt = "abcdefghijklmnopqrstuvwxy"  # 25 tokens, bucket 32: the row wraps around the 64-entry cache
    n = loaded.model.n_ctx - len(prompt)
    expected = sample_texts(loaded, [prompt], max_new_tokens=n, temperature=0)[0]
    g = Generation(ids(loaded, prompt), max_tokens=n, temperature=0.0)
    assert run_all(server.engine, [g]) == [expected]


def test_a_cancelled_generation_frees_its_slot(server: Server, loaded: Any) -> None:
    g = Generation(ids(loaded, "abc"), max_tokens=48, temperature=0.0, stop=["never"])
    g.on_event = lambda kind, payload: g.cancel()  # the client goes away at its first token (on the engine's thread)
    server.engine.submit(g)
    assert g.done.wait(60)
    assert g.finish_reason == "cancelled" and len(g.token_ids) <= 2 and server.engine.active() == 0
    after = Generation(ids(loaded, "abc"), max_tokens=16, temperature=0.0)
    assert run_all(server.engine, [after]) == [sample_texts(loaded, ["abc"], max_new_tokens=16, temperature=0)[0]]


def test_a_full_queue_refuses_at_once(loaded: Any) -> None:
    idle = Engine(loaded, slots=2, queue_size=3)  # not started: nothing leaves the queue
    idle.submit(*[Generation([1], max_tokens=1) for _ in range(5)])  # 2 free slots + 3 queued
    with pytest.raises(QueueFull, match="waiting"):
        idle.submit(Generation([1], max_tokens=1))
    assert idle.queue_depth() == 5 and idle.stats.requests_rejected == 1


@pytest.mark.slow  # compiles the model again under a mesh: ~15 s on 2 busy cores
def test_a_sharded_engine_reads_what_one_device_does(run_dir: Any, loaded: Any) -> None:
    from neo.infer.sampling import load_for_sampling, mesh_for_sampling

    sharded = load_for_sampling(run_dir, *mesh_for_sampling(run_dir, "x:2,y:4", "batch:x,heads:y"))
    engine = Engine(sharded, slots=3, queue_size=8)  # the batch is split 2 ways: 4 slots
    assert engine.slots == 4
    engine.start()
    try:
        gens = [Generation(ids(loaded, p), max_tokens=n, temperature=0.0) for p, n in CASES]
        expected = [sample_texts(loaded, [p], max_new_tokens=n, temperature=0)[0] for p, n in CASES]
        assert run_all(engine, gens) == expected
    finally:
        engine.stop(drain=False, timeout=30)

"""The HTTP API against a live server: the `openai` client unchanged (plain and streamed), raw HTTP for the error
cases, many concurrent clients, a client that disconnects mid-stream, and the metrics."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

from neo.infer.sampling import sample_texts
from tests.serve.conftest import QUEUE, SLOTS, Server


def client(server: Server, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0, timeout=60, **kw)


def post(server: Server, body: bytes | dict[str, Any], key: str | None = "", path: str = "/v1/completions") -> Any:
    """(status, headers, parsed body) of a raw POST."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key or server.key}"
    req = urllib.request.Request(server.url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return res.status, res.headers, json.loads(res.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def get(server: Server, path: str, key: str | None = "") -> tuple[int, str]:
    headers = {} if key is None else {"Authorization": f"Bearer {key or server.key}"}
    req = urllib.request.Request(server.url + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_openai_client_plain_equals_neo_sample(server: Server, loaded: Any) -> None:
    expected = sample_texts(loaded, ["hello world"], max_new_tokens=12, temperature=0)[0]
    out = client(server).completions.create(model="tiny", prompt="hello world", max_tokens=12, temperature=0)
    assert out.choices[0].text == expected and out.object == "text_completion"
    assert out.usage.prompt_tokens == 11 and out.usage.completion_tokens == len(loaded.tokenizer.encode(expected).ids)
    assert out.choices[0].finish_reason in ("length", "stop")


def test_openai_client_stream_equals_neo_sample(server: Server, loaded: Any) -> None:
    expected = sample_texts(loaded, ["serve me"], max_new_tokens=16, temperature=0.8, top_k=10, seed=3)[0]
    stream = client(server).completions.create(
        model="tiny",
        prompt="serve me",
        max_tokens=16,
        temperature=0.8,
        seed=3,
        stream=True,
        extra_body={"top_k": 10},
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(pieces) == expected and len(pieces) > 2  # token by token
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 8
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("length", "stop")


def test_prompt_lists_n_stop_and_logprobs(server: Server, loaded: Any) -> None:
    prompts = ["abc", "the quick brown"]
    greedy = [sample_texts(loaded, [p], max_new_tokens=10, temperature=0)[0] for p in prompts]
    out = client(server).completions.create(model="tiny", prompt=prompts, max_tokens=10, temperature=0, n=2, logprobs=3)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    assert [c.text for c in out.choices] == [greedy[0], greedy[0], greedy[1], greedy[1]]
    lp = out.choices[0].logprobs
    assert "".join(lp.tokens) == greedy[0] and len(lp.token_logprobs) == len(lp.tokens)
    assert all(
        len(t) == 3 and max(t.values()) == pytest.approx(v)
        for t, v in zip(lp.top_logprobs, lp.token_logprobs, strict=True)
    )
    stop = greedy[1][3:5]
    out = client(server).completions.create(model="tiny", prompt=prompts[1], max_tokens=10, temperature=0, stop=stop)
    assert out.choices[0].text == greedy[1][: greedy[1].index(stop)] and out.choices[0].finish_reason == "stop"


def test_models_health_and_auth(server: Server) -> None:
    assert [m.id for m in client(server).models.list()] == ["tiny"]
    assert get(server, "/health", key=None)[0] == 200  # no key needed
    for path in ("/v1/models", "/metrics", "/"):
        status, body = get(server, path, key="wrong")
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="nope", max_retries=0).completions.create(
            model="tiny", prompt="a", max_tokens=2
        )


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        ({"model": "tiny", "prompt": "a", "max_tokenz": 3}, 400, "unknown field 'max_tokenz'"),
        ({"model": "tiny", "prompt": "a" * 64, "max_tokens": 1}, 400, "maximum context length is 64"),
        ({"model": "tiny", "prompt": "a" * 30, "max_tokens": 40}, 400, "maximum context length is 64"),
        ({"model": "tiny", "prompt": "a", "max_tokens": 49}, 400, "above this server's limit of 48"),
        ({"model": "tiny", "prompt": "a", "temperature": -1}, 400, "temperature"),
        ({"model": "tiny", "prompt": "a", "presence_penalty": 0.5}, 400, "not supported"),
        ({"model": "tiny", "prompt": [999], "max_tokens": 2}, 400, "token ids must be in"),
        ({"model": "gpt-4", "prompt": "a"}, 404, "does not exist"),
        ({"prompt": "a"}, 400, "model"),
    ],
)
def test_bad_requests_get_openai_errors(server: Server, body: Any, status: int, message: str) -> None:
    code, _, parsed = post(server, body)
    assert code == status and message in parsed["error"]["message"]
    assert set(parsed["error"]) == {"message", "type", "param", "code"}


def test_many_concurrent_clients_complete_or_get_429(server: Server, loaded: Any) -> None:
    prompts = ["a", "bb", "hello", "the quick brown", "serve me", "zz top"]
    expected = {p: sample_texts(loaded, [p], max_new_tokens=16, temperature=0)[0] for p in prompts}
    results: list[tuple[str, int, Any]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        p = prompts[i % len(prompts)]
        status, headers, body = post(server, {"model": "tiny", "prompt": p, "max_tokens": 16, "temperature": 0})
        with lock:
            results.append((p, status, body if status == 200 else headers.get("Retry-After")))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 24 and not any(t.is_alive() for t in threads)
    for p, status, body in results:
        assert status in (200, 429)
        if status == 200:
            assert body["choices"][0]["text"] == expected[p]
        else:
            assert body == "1"  # Retry-After
    assert sum(s == 200 for _, s, _ in results) >= SLOTS + QUEUE


def test_a_full_queue_answers_429_with_retry_after(loaded: Any) -> None:
    from starlette.testclient import TestClient

    from neo.serve.app import create_app
    from neo.serve.engine import Engine, Generation

    idle = Engine(loaded, slots=1, queue_size=1)  # never started: what is queued stays queued
    idle.submit(Generation([1], max_tokens=1), Generation([1], max_tokens=1))
    res = TestClient(create_app(idle, model_name="tiny")).post(
        "/v1/completions", json={"model": "tiny", "prompt": "a", "max_tokens": 2}
    )
    assert res.status_code == 429 and res.headers["Retry-After"] == "1"
    assert res.json()["error"]["code"] == "rate_limit_exceeded"


def test_a_client_that_disconnects_mid_stream_cancels_its_generations(loaded: Any) -> None:
    """Starlette ends the stream when the client's disconnect arrives; the stream's end cancels its generations (the
    engine then frees their slots: tests/serve/test_engine.py). Driven at the ASGI level so nothing races."""
    import asyncio

    from neo.serve.app import create_app
    from neo.serve.engine import Engine

    idle = Engine(loaded, slots=1, queue_size=1)  # never started: the stream waits for tokens forever
    app = create_app(idle, model_name="tiny")
    body = json.dumps({"model": "tiny", "prompt": "abc", "max_tokens": 8, "stream": True, "n": 2}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/completions",
        "raw_path": b"/v1/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def scenario() -> None:
        gone = asyncio.Event()
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        task = asyncio.create_task(app(scope, receive, send))
        while idle.queue_depth() < 2:
            await asyncio.sleep(0.01)
        queued = list(idle._waiting)
        assert not any(g.cancelled.is_set() for g in queued)
        gone.set()
        await asyncio.wait_for(task, 10)
        assert all(g.cancelled.is_set() for g in queued)

    asyncio.run(scenario())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200


def test_metrics_count_requests_tokens_and_slots(server: Server) -> None:
    client(server).completions.create(model="tiny", prompt="abc", max_tokens=4, temperature=0)
    status, text = get(server, "/metrics")
    assert status == 200
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if not line.startswith("#")}
    assert values['neo_requests_total{status="200"}'] >= 1 and values["neo_generated_tokens_total"] >= 4
    assert values["neo_slots"] == SLOTS and values["neo_queue_depth"] == 0
    assert 0 < values["neo_batch_fill_ratio"] <= 1 and "neo_tokens_per_second" in values

"""The HTTP layer: an OpenAI-compatible /v1/completions (plain and server-sent events), /v1/models, /health,
Prometheus /metrics and the playground page, all in front of one `Engine`.

The engine's thread calls each generation's `on_event`; that hands the event to the request's asyncio queue with
`call_soon_threadsafe`, so the event loop never blocks on the device. Errors have OpenAI's body:
`{"error": {"message", "type", "param", "code"}}` with 400 (bad request), 401 (API key), 404 (model, route),
429 (queue full, with Retry-After) or 503 (the engine failed).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from neo.serve.engine import Engine, Generation, QueueFull, Token
from neo.serve.schema import CompletionRequest

RETRY_AFTER_S = 1


class ApiError(Exception):
    """An error answered with OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def create_app(
    engine: Engine, *, model_name: str, api_key: str | None = None, max_tokens: int | None = None
) -> FastAPI:
    """The FastAPI app serving `engine`'s model as `model_name`; `max_tokens` caps a request's max_tokens."""
    tok = engine.loaded.tokenizer
    n_ctx = engine.length
    limit = min(max_tokens or n_ctx, n_ctx)
    statuses: Counter[int] = Counter()
    started = int(time.time())
    app = FastAPI(title="neo serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        statuses[exc.status] += 1
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            message = "the request body is not valid JSON"
        elif first.get("type") == "extra_forbidden":
            message = f"unknown field {param!r} in the request body"
        else:
            message = f"{param}: {first.get('msg', 'invalid value')}" if param else str(first.get("msg", "invalid"))
        statuses[400] += 1
        return ApiError(400, message, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        statuses[exc.status_code] += 1
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return ApiError(exc.status_code, str(exc.detail), kind=kind).response()

    async def authorized(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else request.query_params.get("api_key", "")
        if not secrets.compare_digest(token.encode(), api_key.encode()):
            raise ApiError(401, "missing or wrong API key (send Authorization: Bearer KEY)", code="invalid_api_key")

    @app.get("/health")
    async def health() -> JSONResponse:
        if engine.error is not None:
            return JSONResponse({"status": "error", "error": str(engine.error)}, status_code=503)
        return JSONResponse(
            {
                "status": "ok",
                "model": model_name,
                "slots": engine.slots,
                "active": engine.active(),
                "queued": engine.queue_depth(),
            }
        )

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models() -> dict[str, Any]:
        statuses[200] += 1
        card = {"id": model_name, "object": "model", "created": started, "owned_by": "neo", "max_model_len": n_ctx}
        return {"object": "list", "data": [card]}

    @app.get("/metrics", dependencies=[Depends(authorized)])
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(_prometheus(engine, statuses), media_type="text/plain; version=0.0.4")

    @app.get("/", dependencies=[Depends(authorized)])
    async def playground() -> HTMLResponse:
        page = resources.files("neo.serve").joinpath("static/playground.html").read_text(encoding="utf-8")
        return HTMLResponse(page.replace("__MODEL__", json.dumps(model_name)))

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def completions(body: CompletionRequest, request: Request) -> Response:
        if body.model != model_name:
            raise ApiError(
                404,
                f"the model {body.model!r} does not exist; this server serves {model_name!r}",
                kind="not_found_error",
                param="model",
                code="model_not_found",
            )
        prompts = _prompt_ids(body, tok, engine)
        wanted = body.max_tokens if body.max_tokens is not None else n_ctx - max(len(p) for _, p in prompts)
        if wanted > limit:
            raise ApiError(400, f"max_tokens is {wanted}, above this server's limit of {limit}", param="max_tokens")
        for _, ids in prompts:
            if len(ids) + wanted > n_ctx or len(ids) >= n_ctx:
                raise ApiError(
                    400,
                    f"this model's maximum context length is {n_ctx} tokens; the prompt has "
                    f"{len(ids)} and max_tokens asks for {wanted} more: shorten the prompt or lower "
                    "max_tokens",
                    param="prompt" if len(ids) >= n_ctx else "max_tokens",
                    code="context_length_exceeded",
                )
        if len(prompts) * body.n > engine.slots + engine.queue_size:
            raise ApiError(
                400,
                f"{len(prompts) * body.n} completions in one request: this server takes at most "
                f"{engine.slots + engine.queue_size}",
                param="n",
            )
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[int, str, Any]] = asyncio.Queue()
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
        gens: list[Generation] = []
        for _, ids in prompts:
            for j in range(body.n):
                index = len(gens)

                def on_event(kind: str, payload: Any, index: int = index) -> None:
                    loop.call_soon_threadsafe(events.put_nowait, (index, kind, payload))

                gens.append(
                    Generation(
                        prompt_ids=ids,
                        max_tokens=wanted,
                        temperature=body.temperature,
                        top_k=body.top_k,
                        top_p=body.top_p,
                        seed=seed + j,
                        stop=body.stops(),
                        logprobs=body.logprobs is not None,
                        on_event=on_event,
                    )
                )
        echoes = [text if body.echo else "" for text, _ in prompts for _ in range(body.n)]
        if engine.error is not None:
            raise ApiError(503, f"the model failed: {engine.error}", kind="server_error")
        try:
            engine.submit(*gens)
        except QueueFull as exc:
            raise ApiError(
                429,
                f"the server is busy ({exc}); retry after {RETRY_AFTER_S} s",
                kind="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        meta = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model_name,
        }
        usage_prompt = sum(len(ids) for _, ids in prompts) * body.n
        statuses[200] += 1
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            stream = _stream(gens, events, meta, echoes, body.logprobs, tok, usage_prompt, include_usage)
            return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return await _complete(request, gens, events, meta, echoes, body.logprobs, tok, usage_prompt)

    return app


def _prompt_ids(body: CompletionRequest, tok: Any, engine: Engine) -> list[tuple[str, list[int]]]:
    """(text, token ids) per prompt; an empty prompt starts from end-of-text, as `neo sample` does."""
    raw = body.prompt
    if isinstance(raw, str):
        items: list[str | list[int]] = [raw]
    elif raw and all(isinstance(x, int) for x in raw):
        items = [list(raw)]  # type: ignore[arg-type]
    else:
        items = list(raw)  # type: ignore[arg-type]
    out = []
    for item in items:
        text, ids = (item, tok.encode(item).ids) if isinstance(item, str) else (tok.decode(item), list(item))
        if any(not 0 <= t < engine.vocab for t in ids):  # a tokenizer larger than the model's vocabulary, too
            raise ApiError(400, f"prompt token ids must be in [0, {engine.vocab})", param="prompt")
        out.append((text, ids or [engine.loaded.eos_id or 0]))
    return out


class _Logprobs:
    """OpenAI's completion logprobs object, built token by token."""

    def __init__(self, top: int, tok: Any, offset: int) -> None:
        self.top, self.tok, self.offset = top, tok, offset
        self.data: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}

    def add(self, token: Token) -> dict[str, list[Any]]:
        piece = self.tok.decode([token.id])
        best = sorted(token.top.items(), key=lambda kv: -kv[1])[: self.top]
        row = {
            "tokens": [piece],
            "token_logprobs": [token.logprob],
            "top_logprobs": [{self.tok.decode([i]): lp for i, lp in best}],
            "text_offset": [self.offset],
        }
        self.offset += len(token.text)
        for k, v in row.items():
            self.data[k].extend(v)
        return row


async def _drain(gens: list[Generation]) -> None:
    for g in gens:
        g.cancel()


async def _complete(
    request: Request,
    gens: list[Generation],
    events: asyncio.Queue,
    meta: dict[str, Any],
    echoes: list[str],
    logprobs: int | None,
    tok: Any,
    usage_prompt: int,
) -> JSONResponse:
    """Wait for every generation; a client that disconnects meanwhile frees its slots."""
    texts = list(echoes)
    lps = [_Logprobs(logprobs, tok, len(e)) if logprobs is not None else None for e in echoes]
    reasons: list[str | None] = [None] * len(gens)
    try:
        while any(r is None for r in reasons):
            try:
                index, kind, payload = await asyncio.wait_for(events.get(), timeout=1.0)
            except TimeoutError:
                if await request.is_disconnected():
                    await _drain(gens)
                    return JSONResponse({}, status_code=499)
                continue
            if kind == "token":
                texts[index] += payload.text
                if lps[index] is not None:
                    lps[index].add(payload)
            elif kind == "text":
                texts[index] += payload
            else:
                reasons[index] = payload
    finally:
        await _drain(gens)  # no-op for finished ones; frees slots if this task was cancelled
    failed = next((r for r in reasons if r and r.startswith("error")), None)
    if failed:
        raise ApiError(503, f"the model failed: {failed[7:]}", kind="server_error")
    choices = [
        {"text": t, "index": i, "logprobs": lp.data if lp else None, "finish_reason": r}
        for i, (t, lp, r) in enumerate(zip(texts, lps, reasons, strict=True))
    ]
    completion = sum(len(g.token_ids) for g in gens)
    usage = {"prompt_tokens": usage_prompt, "completion_tokens": completion, "total_tokens": usage_prompt + completion}
    return JSONResponse({**meta, "choices": choices, "usage": usage})


async def _stream(
    gens: list[Generation],
    events: asyncio.Queue,
    meta: dict[str, Any],
    echoes: list[str],
    logprobs: int | None,
    tok: Any,
    usage_prompt: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    """Server-sent events: one chunk per token (per choice), a last chunk per choice with its finish_reason,
    optionally the usage, then [DONE]. When the client goes away the generator is closed and frees the slots."""

    def chunk(index: int, text: str, lp: Any, reason: str | None) -> str:
        choice = {"text": text, "index": index, "logprobs": lp, "finish_reason": reason}
        return f"data: {json.dumps({**meta, 'choices': [choice]})}\n\n"

    lps = [_Logprobs(logprobs, tok, len(e)) if logprobs is not None else None for e in echoes]
    left = len(gens)
    try:
        for i, e in enumerate(echoes):
            if e:
                yield chunk(i, e, None, None)
        while left:
            index, kind, payload = await events.get()
            if kind == "token":
                lp = lps[index]
                yield chunk(index, payload.text, lp.add(payload) if lp is not None else None, None)
            elif kind == "text":
                yield chunk(index, payload, None, None)
            else:
                left -= 1
                if payload.startswith("error"):
                    err = {"message": f"the model failed: {payload[7:]}", "type": "server_error"}
                    yield f"data: {json.dumps({'error': err})}\n\n"
                    return
                yield chunk(index, "", None, payload)
        if include_usage:
            completion = sum(len(g.token_ids) for g in gens)
            usage = {
                "prompt_tokens": usage_prompt,
                "completion_tokens": completion,
                "total_tokens": usage_prompt + completion,
            }
            yield f"data: {json.dumps({**meta, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        await _drain(gens)


def _prometheus(engine: Engine, statuses: Counter[int]) -> str:
    """The Prometheus text exposition of the engine's counters and gauges."""
    s = engine.stats
    fill = s.busy_slot_steps / (s.decode_steps * engine.slots) if s.decode_steps else 0.0
    lines = [
        "# HELP neo_requests_total HTTP requests answered, by status code.",
        "# TYPE neo_requests_total counter",
        *(f'neo_requests_total{{status="{code}"}} {n}' for code, n in sorted(statuses.items())),
    ]
    rows = [
        (
            "neo_completions_finished_total",
            "counter",
            "Completions (one prompt, one choice) finished.",
            s.requests_finished,
        ),
        ("neo_completions_cancelled_total", "counter", "Completions whose client went away.", s.requests_cancelled),
        ("neo_requests_rejected_total", "counter", "Requests refused with 429 (queue full).", s.requests_rejected),
        ("neo_prompt_tokens_total", "counter", "Prompt tokens prefilled.", s.prompt_tokens),
        ("neo_generated_tokens_total", "counter", "Tokens generated.", s.generated_tokens),
        ("neo_decode_steps_total", "counter", "Batched decode steps run.", s.decode_steps),
        ("neo_tokens_per_second", "gauge", "Tokens generated per second over the last 10 s.", s.tokens_per_second()),
        ("neo_queue_depth", "gauge", "Completions waiting for a slot.", engine.queue_depth()),
        ("neo_active_slots", "gauge", "Slots decoding now.", engine.active()),
        ("neo_slots", "gauge", "Slots in the batched KV cache.", engine.slots),
        ("neo_batch_fill_ratio", "gauge", "Mean fraction of slots busy per decode step since start.", fill),
    ]
    for name, kind, doc, value in rows:
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return "\n".join(lines) + "\n"

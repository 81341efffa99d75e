"""The batching engine: one background thread owns the device and decodes every active request together.

Requests wait in a bounded queue (`submit` raises `QueueFull` at once when it is full: the HTTP layer answers 429).
Between decode steps the engine prefills waiting requests into free slots; each step decodes every active slot; a
request that finishes (end of text, a stop string, its token budget) or whose client went away frees its slot
before the next step. Results travel back through each request's `Generation`, which is thread-safe: the engine
calls `push`, the consumer (an asyncio task, a test) reads with `events` / `wait`.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neo.infer.sampling import Loaded
from neo.model.decode import seed_key
from neo.serve.device import programs_for


class QueueFull(Exception):
    """The engine's waiting queue is full: retry later."""


@dataclass
class Token:
    """One emitted token: its id, the text it completes (may be empty mid-character), and log-probabilities."""

    id: int
    text: str
    logprob: float
    top: dict[int, float]


@dataclass
class Generation:
    """One completion (one prompt, one choice): its inputs, its progress, and how its consumer hears of it.

    `on_event(kind, payload)` is called from the engine thread: ("token", Token) for every token, perhaps ("text",
    str) with text held back while it could have begun a stop string, then exactly one ("done", finish_reason) with
    "stop" or "length" (or "cancelled", "error: ..."). Everything the engine touches
    is set before `submit`.
    """

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False  # compute each token's log-probability and the top alternatives
    on_event: Callable[[str, Any], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    # filled in by the engine
    token_ids: list[int] = field(default_factory=list)
    text: str = ""  # handed to the consumer so far
    decoded: str = ""  # the tokens' text (up to a stop string), some of it perhaps held back
    checked: int = 0  # how much of `decoded` was searched for stop strings
    cut: bool = False  # a stop string ended it
    finish_reason: str | None = None
    submitted: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """The client went away: the engine frees the slot before its next step."""
        self.cancelled.set()


@dataclass
class Stats:
    """Counters the /metrics endpoint renders (monotonic totals and current gauges)."""

    requests_admitted: int = 0
    requests_finished: int = 0
    requests_cancelled: int = 0
    requests_rejected: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    decode_steps: int = 0
    busy_slot_steps: int = 0  # sum over steps of the active slots: batch fill = busy_slot_steps / (steps * slots)
    prefills: int = 0
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1 << 16))  # (time, tokens)

    def tokens_per_second(self, window: float = 10.0) -> float:
        """Generated tokens per second over the last `window` seconds."""
        now = time.monotonic()
        tokens = sum(n for t, n in list(self.recent) if now - t <= window)
        return tokens / window


class Engine:
    """Continuous batching over `slots` rows of one KV cache of `context` (default n_ctx) entries per row.

    `start()` launches the device thread; `submit(generation)` enqueues (or raises QueueFull); `stop(drain=True)`
    finishes what was submitted, then ends the thread.
    """

    def __init__(self, loaded: Loaded, *, slots: int = 8, queue_size: int = 64, context: int | None = None) -> None:
        from neo.model.decode import batch_multiple, for_decoding

        self.loaded = loaded
        self.cfg, self.params = for_decoding(loaded.model, _unbox(loaded.params))
        self.multiple = batch_multiple(loaded.mesh, loaded.rules)
        self.slots = -(-slots // self.multiple) * self.multiple  # a sharded batch: whole multiples of its split
        self.queue_size = queue_size
        # entries per slot: every request keeps prompt + max_tokens <= length, so a row never overflows; each step
        # attends over all of them, so a length below n_ctx (`context`) makes every step cheaper
        self.length = min(context or self.cfg.n_ctx, self.cfg.n_ctx)
        tok = loaded.tokenizer
        self.vocab = min(max(tok.get_vocab(with_added_tokens=True).values()) + 1, self.cfg.n_vocab)
        self.stats = Stats()
        self._waiting: collections.deque[Generation] = collections.deque()
        self._active: list[Generation | None] = [None] * self.slots
        self._lock = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._programs = programs_for(self.cfg, loaded.mesh, loaded.rules)
        self.error: BaseException | None = None

    # --- the consumer side (any thread) ---------------------------------------------------------------------------

    def submit(self, *generations: Generation) -> None:
        """Queue these generations together (all or none); QueueFull when the queue has no room for all of them."""
        with self._lock:
            if self._stopping or self.error is not None:
                raise QueueFull("the server is shutting down")
            if len(self._waiting) + len(generations) > self.queue_size + self.free_slots():
                self.stats.requests_rejected += 1
                raise QueueFull(f"{len(self._waiting)} requests are waiting (the queue holds {self.queue_size})")
            self._waiting.extend(generations)
            self._lock.notify_all()

    def free_slots(self) -> int:
        return sum(g is None for g in self._active)

    def queue_depth(self) -> int:
        return len(self._waiting)

    def active(self) -> int:
        return self.slots - self.free_slots()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="neo-serve-engine", daemon=True)
        self._thread.start()

    def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking requests; with `drain`, finish every submitted one first; then end the thread."""
        with self._lock:
            self._stopping = True
            if not drain:
                for g in self._waiting:
                    g.cancel()
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def warm_up(self) -> None:
        """Compile the decode step and the smallest prefill before the first request arrives."""
        g = Generation(prompt_ids=[self.loaded.eos_id or 0], max_tokens=2, temperature=0.0)
        self.submit(g)
        g.done.wait()

    # --- the device thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        from neo.model.decode import kv_dtype, param_shardings, placed_cache
        from neo.parallel.mesh import placement

        try:
            with placement(self.loaded.mesh, self.loaded.rules):
                if self.loaded.mesh is not None:
                    self.params = jax_device_put(
                        self.params, param_shardings(self.cfg, self.loaded.mesh, self.loaded.rules or ())
                    )
                mesh, rules = self.loaded.mesh, self.loaded.rules
                cache = placed_cache(self.cfg, self.slots, self.length, mesh, rules, kv_dtype(self.cfg, self.params))
                if self.loaded.mesh is None:  # committed to its device, as every later cache is: one compile each
                    cache = jax_device_put(cache, jax_devices()[0])
                self._cache = cache
                self._loop()
        except BaseException as exc:  # the device failed: every waiting client hears of it, never hangs
            self.error = exc
            with self._lock:
                pending = [g for g in self._active if g is not None] + list(self._waiting)
                self._waiting.clear()
                self._active = [None] * self.slots
            for g in pending:
                self._finish(g, f"error: {exc}")
            raise

    def _loop(self) -> None:
        n = self.slots
        self._tokens = np.zeros((n, 1), np.int32)
        self._positions = np.zeros((n, 1), np.int32)
        self._index = np.zeros(n, np.int32)
        self._keys = np.zeros((n, 2), np.uint32)
        self._temperature = np.zeros(n, np.float32)
        self._top_k = np.zeros(n, np.int32)
        self._top_p = np.ones(n, np.float32)
        while True:
            with self._lock:
                while not self._waiting and self.free_slots() == n and not self._stopping:
                    self._lock.wait()
                if self._stopping and not self._waiting and self.free_slots() == n:
                    return
            self._drop_cancelled()
            self._admit()
            if self.free_slots() < n:
                self._step()

    def _drop_cancelled(self) -> None:
        with self._lock:
            for g in [g for g in self._waiting if g.cancelled.is_set()]:
                self._waiting.remove(g)
                self._finish(g, "cancelled")
        for slot, g in enumerate(self._active):
            if g is not None and g.cancelled.is_set():
                self._release(slot, "cancelled")

    def _admit(self) -> None:
        """Prefill waiting requests into free slots, each exactly as `generate` prefills one prompt."""
        from neo.model.decode import bucket

        while True:
            with self._lock:
                if not self._waiting or self.free_slots() == 0:
                    return
                g = self._waiting.popleft()
                slot = self._active.index(None)
                self._active[slot] = g
            ids = g.prompt_ids
            width = bucket(len(ids))
            rows = self.multiple
            tokens = np.zeros((rows, width), np.int32)
            valid = np.zeros((rows, width), bool)
            tokens[0, width - len(ids) :] = ids
            valid[0, width - len(ids) :] = True
            valid[1:, -1] = True  # dummy rows (a sharded batch) are one token, so no row attends to nothing
            positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32)
            key = seed_key(g.seed)  # the key `generate` starts from
            knobs = (np.float32(g.temperature), np.int32(g.top_k), np.float32(g.top_p), np.int32(self.vocab))
            args = (self.params, tokens, positions, valid, self._cache, np.int32(slot), key, *knobs)
            # one row: sampling and log-probabilities cost little, so one compile per bucket, whatever was asked
            chosen, self._cache = self._programs.prefill(*args, sampling=True, logprobs=True)
            self._tokens[slot, 0] = 0
            self._positions[slot, 0] = len(ids)
            self._index[slot] = width
            self._keys[slot] = key
            self._temperature[slot], self._top_k[slot], self._top_p[slot] = g.temperature, g.top_k, g.top_p
            self.stats.prefills += 1
            self.stats.requests_admitted += 1
            self.stats.prompt_tokens += len(ids)
            self._emit(slot, _host(chosen), 0)

    def _step(self) -> None:
        """One token for every active slot (a free slot decodes a dummy row: the batch shape never changes)."""
        sampling = bool(np.any(self._temperature[[g is not None for g in self._active]] > 0))
        logprobs = any(g is not None and g.logprobs for g in self._active)
        # copies: XLA CPU may read a numpy argument in place, after this thread has moved on and changed it
        host_args = [a.copy() for a in (self._tokens, self._positions)]
        chosen, self._cache = self._programs.decode(
            self.params,
            *host_args,
            self._cache,
            self._index.copy(),
            self._keys.copy(),
            self._temperature.copy(),
            self._top_k.copy(),
            self._top_p.copy(),
            np.int32(self.vocab),
            sampling=sampling,
            logprobs=logprobs,
        )
        host = _host(chosen)
        active = [slot for slot, g in enumerate(self._active) if g is not None]
        self.stats.decode_steps += 1
        self.stats.busy_slot_steps += len(active)
        self._positions[:, 0] += 1
        self._index += 1
        free = [g is None for g in self._active]
        self._positions[free, 0] = 0  # a free row's dummy token stays inside the position table
        for slot in active:
            self._emit(slot, host, slot)

    def _emit(self, slot: int, host: tuple[np.ndarray, ...], row: int) -> None:
        """Hand row `row` of a step's choice to the slot's generation; free the slot when it has finished."""
        g = self._active[slot]
        assert g is not None
        token_id = int(host[0][row])
        self._tokens[slot, 0] = token_id
        if g.first_token_at is None:
            g.first_token_at = time.monotonic()
        eos = self.loaded.eos_id
        if eos is not None and token_id == eos:
            self._release(slot, "stop")
            return
        g.token_ids.append(token_id)
        self.stats.generated_tokens += 1
        self.stats.recent.append((time.monotonic(), 1))
        decoded = self.loaded.tokenizer.decode(g.token_ids)
        if not decoded.endswith("\ufffd"):  # a whole character (bytes may split one)
            g.decoded = decoded
        reason, hold = None, 0
        if g.stop:
            start = max(0, g.checked - max(len(s) for s in g.stop) + 1)
            hits = [i for s in g.stop if (i := g.decoded.find(s, start)) >= 0]
            if hits:  # the text ends before the stop string, which is not returned (as OpenAI does)
                g.decoded, reason, g.cut = g.decoded[: min(hits)], "stop", True
            else:  # text that may begin a stop string waits until the next tokens tell
                hold = max((k for s in g.stop for k in range(1, len(s)) if g.decoded.endswith(s[:k])), default=0)
            g.checked = len(g.decoded)
        if reason is None and len(g.token_ids) >= g.max_tokens:
            reason, hold = "length", 0
        piece = g.decoded[len(g.text) : len(g.decoded) - hold]
        g.text += piece
        lp = float(host[1][row])
        top = {int(i): float(p) for i, p in zip(host[2][row], host[3][row], strict=True) if math.isfinite(p)}
        if g.on_event is not None:
            g.on_event("token", Token(token_id, piece, lp, top))
        if reason is not None:
            self._release(slot, reason)

    def _release(self, slot: int, reason: str) -> None:
        g = self._active[slot]
        with self._lock:
            self._active[slot] = None
            self._lock.notify_all()
        if g is not None:
            self._finish(g, reason)

    def _finish(self, g: Generation, reason: str) -> None:
        if g.finish_reason is not None:
            return
        g.finish_reason = reason
        if reason in ("stop", "length") and not g.cut:  # the whole text, as `neo sample` decodes it at the end
            g.decoded = self.loaded.tokenizer.decode(g.token_ids)  # (a last character cut short included)
        if reason in ("stop", "length") and len(g.decoded) > len(g.text):  # held back for a stop string that never came
            rest = g.decoded[len(g.text) :]
            g.text += rest
            if g.on_event is not None:
                g.on_event("text", rest)
        if reason == "cancelled":
            self.stats.requests_cancelled += 1
        else:
            self.stats.requests_finished += 1
        if g.on_event is not None:
            g.on_event("done", reason)
        g.done.set()


def _host(chosen: Any) -> tuple[np.ndarray, ...]:
    import jax

    return tuple(np.asarray(a) for a in jax.device_get(tuple(chosen)))


def _unbox(params: Any) -> Any:
    import flax.linen as nn

    return nn.meta.unbox(params)


def jax_devices() -> list[Any]:
    import jax

    return jax.devices()


def jax_device_put(tree: Any, shardings: Any) -> Any:
    import jax

    return jax.device_put(tree, shardings)

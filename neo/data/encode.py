"""Encode a text corpus into TFRecord shards plus a dataset card.

Layout of the work: a reader thread streams documents in a fixed order and cuts them into batches; the batches are
tokenized in order, either by a second thread (one worker: `tokenizers` already uses every core for a batch, and
releases the GIL) or by a pool of processes; the main thread writes the records. The three overlap, so with one worker
the tokenizer never waits for reading or writing. Shards are defined by the document stream itself (shard k holds
documents k·files_per … (k+1)·files_per − 1), so the output is identical whatever the worker count.

Modes:
- `documents`: one record per document, followed by the separator; documents shorter than `minimum_size` tokens are
  dropped and counted.
- `chunks`: the documents (each followed by the separator) form one token stream, cut into records of exactly
  `chunk_size + 1` tokens; tails carry across documents, files and shards. Only the final remainder is special: it is
  written as a shorter last record if it holds at least `minimum_size` tokens, and counted as dropped otherwise.

Resuming: a shard is written under a temporary name (in an object store: a local temporary file, uploaded as one
object) with its state (counts, and in chunks mode the carried tail) saved beside it before the shard appears; a
re-run with the same settings re-reads the input but skips the tokenization and writing of finished shards. The
same holds for `--out gs://...`.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from neo import storage
from neo.data.card import CARD_FILE, DatasetCard, ShardInfo, write_card
from neo.data.corpus import CorpusStats, iter_documents, resolve_inputs
from neo.data.tfrecord import ShardWriter
from neo.data.tokenizer import TOKENIZER_FILE, copy_tokenizer, eos_id, fingerprint, load_tokenizer, pad_id
from neo.errors import DataError

MODES = ("documents", "chunks")
STATE_DIR = ".neo-encode"
BATCH_DOCS = 1024  # documents per tokenizer call at most
BATCH_CHARS = 8 << 20  # ... or about this many characters, whichever comes first (bounds memory per batch)
FIRST_BATCH_CHARS = 256 << 10  # batches grow from this size to BATCH_CHARS: tokenization starts without waiting long


@dataclass
class EncodeProgress:
    """Counts reported after each batch, for progress bars."""

    files_done: int
    files_total: int
    documents: int
    tokens: int
    shards_done: int


@dataclass
class _ShardState:
    """What a finished shard contributed; saved next to the shard so a resumed run can skip it."""

    file: str
    documents: int = 0
    records: int = 0
    tokens: int = 0
    doc_tokens: int = 0
    text_bytes: int = 0
    documents_dropped: int = 0
    dropped_tokens: int = 0
    min_len: int = 0
    max_len: int = 0
    carry: list[int] = field(default_factory=list)  # chunks mode: the tail that continues into the next shard
    final: bool = False
    bytes: int = 0  # the shard file's size


def shard_name(name: str, index: int) -> str:
    return f"{name}_{index:05d}.tfrecords"


# ---------------------------------------------------------------- tokenization (in-process or in worker processes)

_worker_tok: Tokenizer | None = None


def _init_worker(tok_json: str) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker process; the pool provides parallelism
    global _worker_tok
    _worker_tok = Tokenizer.from_str(tok_json)


def _encode(tok: Tokenizer, docs: list[str]) -> tuple[list[Encoding], int]:
    """The documents' encodings and their size in UTF-8 bytes."""
    encs = tok.encode_batch_fast(docs, add_special_tokens=False)
    nbytes = sum(len(d) if d.isascii() else len(d.encode("utf-8")) for d in docs)  # isascii() is O(1) in CPython
    return encs, nbytes


def _ids(encs: list[Encoding]) -> list[np.ndarray]:
    return [np.fromiter(e.ids, np.int32) for e in encs]


def _ids_of(item: tuple[int, Future[tuple[list[Encoding], int]]]) -> tuple[int, list[np.ndarray], int]:
    """(shard, ids per document, text bytes) of a finished tokenizer call; its encodings are freed on return."""
    shard, call = item
    encs, nbytes = call.result()
    return shard, _ids(encs), nbytes


def _tokenize(tok: Tokenizer, docs: list[str]) -> tuple[list[np.ndarray], int]:
    encs, nbytes = _encode(tok, docs)
    return _ids(encs), nbytes


def _tokenize_in_worker(docs: list[str]) -> tuple[list[np.ndarray], int]:
    assert _worker_tok is not None
    return _tokenize(_worker_tok, docs)


def _prefetch(items: Iterator[Any]) -> Iterator[Any]:
    """Run `items` in a background thread, two ahead: reading and decompressing overlap with tokenization, which
    releases the GIL."""
    q: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((False, None))
        except BaseException as exc:  # re-raised in the consumer
            q.put((False, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # its files are closed now, not when garbage-collected
                close()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


# ---------------------------------------------------------------- output directory and resume state


def _settings(files: list[Path | str], tok_fingerprint: str, **options: Any) -> dict[str, Any]:
    inputs: list[list[Any]] = []
    for p in files:
        if isinstance(p, str):  # an object-store URL
            inputs.append([p, storage.size(p)])
            continue
        st = p.stat()
        inputs.append([str(p.resolve()), st.st_size, int(st.st_mtime)])
    digest = hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:16]
    return {"inputs": digest, "tokenizer": tok_fingerprint, **options}


def _atomic_json(path: str, obj: Any) -> None:
    storage.write_atomic(path, json.dumps(obj))


def _prepare_out(out: str, settings: dict[str, Any], name: str, force: bool) -> str:
    """Create or reuse `out` (local or gs://...); refuse a non-empty directory holding anything but this same
    encode."""
    state_dir = storage.join(out, STATE_DIR)
    if storage.isfile(out):
        raise DataError(f"{out} exists and is not a directory; pass a directory path to --out")
    entries = storage.listdir(out) if storage.isdir(out) else []
    if entries:
        settings_file = storage.join(state_dir, "settings.json")
        same = storage.isfile(settings_file) and json.loads(storage.read_text(settings_file)) == settings
        if not same and not force:
            raise DataError(
                f"{out} is not empty and holds no unfinished encode with these inputs and settings; "
                "pass a new --out directory or --force to replace its dataset"
            )
        if not same:  # --force: remove what an encode writes, nothing else
            storage.remove(state_dir, recursive=True)
            for p in entries:
                base = storage.basename(p)
                if base.endswith((".tfrecords", ".tmp")) or base in (CARD_FILE, TOKENIZER_FILE):
                    storage.remove(p)
    storage.makedirs(out)
    for p in storage.glob(storage.join(out, ".*.tmp")):  # half-written shards of an interrupted run (local)
        storage.remove(p)
    storage.makedirs(state_dir)
    _atomic_json(storage.join(state_dir, "settings.json"), settings)
    return state_dir


def _finished_shards(out: str, state_dir: str, name: str) -> list[_ShardState]:
    """The finished prefix of shards: each has its final file and its saved state."""
    done: list[_ShardState] = []
    while True:
        fname = shard_name(name, len(done))
        state_file = storage.join(state_dir, f"{fname}.json")
        if not storage.isfile(storage.join(out, fname)) or not storage.isfile(state_file):
            return done
        done.append(_ShardState(**json.loads(storage.read_text(state_file))))


# ---------------------------------------------------------------- the writer


class _Writer:
    """Turns tokenized documents into records, shard by shard, in stream order."""

    def __init__(
        self,
        out: str,
        state_dir: str,
        name: str,
        mode: str,
        chunk_size: int,
        separator: np.ndarray,
        minimum_size: int,
        carry: list[int],
    ) -> None:
        self.out, self.state_dir, self.name, self.mode = out, state_dir, name, mode
        self.record_len = chunk_size + 1
        self.separator = separator
        self.minimum_size = minimum_size
        self.parts: list[np.ndarray] = [np.asarray(carry, dtype=np.int32)] if carry else []
        self.buffered = len(carry)
        self.shard: _ShardState | None = None
        self.index = -1
        self.writer: ShardWriter | None = None
        self.written: list[_ShardState] = []

    def _record(self, tokens: np.ndarray) -> None:
        self._records(tokens.reshape(1, -1))

    def _records(self, rows: np.ndarray) -> None:
        """Each row as one record (the chunks of a batch are all `record_len` long)."""
        assert self.writer is not None and self.shard is not None
        if not len(rows):
            return
        self.writer.write_rows(rows)
        s, n = self.shard, rows.shape[1]
        s.min_len = n if s.records == 0 else min(s.min_len, n)
        s.max_len = max(s.max_len, n)
        s.records += len(rows)
        s.tokens += rows.size

    def open(self, index: int) -> None:
        self.index = index
        fname = shard_name(self.name, index)
        self.shard = _ShardState(file=fname)
        self.writer = ShardWriter(storage.join(self.out, fname))

    def add(self, docs: list[np.ndarray], text_bytes: int) -> None:
        assert self.shard is not None
        s = self.shard
        s.text_bytes += text_bytes
        for ids in docs:
            s.documents += 1
            s.doc_tokens += len(ids)
            if self.mode == "documents":
                if len(ids) < self.minimum_size:
                    s.documents_dropped += 1
                    s.dropped_tokens += len(ids)
                    continue
                self._record(np.concatenate([ids, self.separator]))
            else:
                self.parts += [ids, self.separator]
                self.buffered += len(ids) + len(self.separator)
        if self.mode == "chunks" and self.buffered >= self.record_len:
            stream = np.concatenate(self.parts)
            full = len(stream) // self.record_len * self.record_len
            self._records(stream[:full].reshape(-1, self.record_len))
            rest = stream[full:]
            self.parts, self.buffered = [rest], len(rest)

    def commit(self, final: bool) -> None:
        assert self.writer is not None and self.shard is not None
        s = self.shard
        if self.mode == "chunks":
            rest = np.concatenate(self.parts) if self.parts else np.zeros(0, np.int32)
            if final:
                if len(rest) >= self.minimum_size:
                    self._record(rest)
                else:
                    s.dropped_tokens += len(rest)
                rest = rest[:0]
            s.carry = rest.tolist()
        s.final = final
        s.bytes = self.writer.bytes
        _atomic_json(
            storage.join(self.state_dir, f"{s.file}.json"), asdict(s)
        )  # state first: the shard marks completion
        self.writer.commit()
        self.written.append(s)
        self.writer = None
        self.shard = None

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


# ---------------------------------------------------------------- the entry point


def encode_dataset(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    tokenizer: str | Path,
    *,
    mode: str = "documents",
    name: str = "data",
    chunk_size: int = 2048,
    separator: Sequence[int] | None = None,
    minimum_size: int = 1,
    files_per: int = 10_000,
    workers: int = 1,
    force: bool = False,
    progress: Callable[[EncodeProgress], None] | None = None,
) -> DatasetCard:
    """Encode `inputs` into `out_dir` (TFRecord shards, `tokenizer.json`, `dataset.yaml`) and return the card.

    `files_per` is the number of input documents per output shard (GPT-Neo's `--files_per`). An interrupted encode
    resumes after its last finished shard; a failed first encode leaves nothing behind.
    """
    _check_options(mode, name, chunk_size=chunk_size, minimum_size=minimum_size, files_per=files_per, workers=workers)
    tok = load_tokenizer(tokenizer)
    tok_fingerprint = fingerprint(tok)
    sep = _separator_ids(tok, separator)
    files = resolve_inputs(inputs)
    out = os.fspath(out_dir)
    options = dict(
        mode=mode, name=name, chunk_size=chunk_size, separator=sep, minimum_size=minimum_size, files_per=files_per
    )
    fresh = not storage.exists(out)
    state_dir = _prepare_out(out, _settings(files, tok_fingerprint, **options), name, force)
    copy_tokenizer(tok, out)
    done = _finished_shards(out, state_dir, name)

    stats = CorpusStats()
    batches = _batches(iter_documents(files, stats), skip=sum(s.documents for s in done), files_per=files_per)
    carry = done[-1].carry if done else []
    writer = _Writer(out, state_dir, name, mode, chunk_size, np.asarray(sep, np.int32), minimum_size, carry)

    def report(documents: int, tokens: int) -> None:
        if progress is not None:
            progress(EncodeProgress(stats.files, len(files), documents, tokens, len(done) + len(writer.written)))

    if done and done[-1].final:
        _refuse_more_input(out, _tokenized(tok, batches, workers))
    else:
        _write_shards(writer, _tokenized(tok, batches, workers), done, report)
    shards = done + writer.written
    if not shards or stats.documents == 0:
        if fresh:
            storage.remove(out, recursive=True)
        raise DataError(f"no readable documents in the inputs ({len(stats.skipped)} files skipped); check the files")
    if not shards[-1].final:  # the stream ended exactly where an earlier (interrupted) run stopped
        raise DataError(f"{out} holds an interrupted encode that does not match these inputs; pass --force")
    card = _card(shards, stats, tok, tok_fingerprint, len(files), **options)
    write_card(out, card)
    return card


def _check_options(mode: str, name: str, **counts: int) -> None:
    if mode not in MODES:
        raise DataError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    for key, value in counts.items():
        if value < 1:
            raise DataError(f"--{key.replace('_', '-')} must be at least 1, got {value}")
    if not name or "/" in name or name.startswith("."):
        raise DataError(f"--name must be a plain file-name prefix, got {name!r}")


def _separator_ids(tok: Tokenizer, separator: Sequence[int] | None) -> list[int]:
    """The ids written after every document: `separator`, or the tokenizer's end-of-text token."""
    sep = list(separator) if separator else [eos_id(tok)]
    vocab = tok.get_vocab_size()
    bad = [i for i in sep if not 0 <= i < vocab]
    if bad:
        raise DataError(f"--separator id {bad[0]} is outside the tokenizer's vocabulary [0, {vocab})")
    return sep


def _batches(documents: Iterator[str], *, skip: int, files_per: int) -> Iterator[tuple[int, list[str]]]:
    """(shard index, documents) in stream order, after the first `skip` documents; a batch never spans two shards.
    Batches grow from FIRST_BATCH_CHARS to BATCH_CHARS, so tokenizing starts soon and memory stays bounded."""
    batch: list[str] = []
    chars = 0
    shard = 0
    limit = FIRST_BATCH_CHARS
    for i, doc in enumerate(documents):
        if i < skip:
            continue
        if batch and (i // files_per != shard or len(batch) >= BATCH_DOCS or chars >= limit):
            yield shard, batch
            batch, chars, limit = [], 0, min(2 * limit, BATCH_CHARS)
        shard = i // files_per
        batch.append(doc)
        chars += len(doc)
    if batch:
        yield shard, batch


def _tokenized(
    tok: Tokenizer, batches: Iterator[tuple[int, list[str]]], workers: int
) -> Generator[tuple[int, list[np.ndarray], int], None, None]:
    """(shard index, token ids per document, text bytes) per batch, in order, never far ahead of the writer."""
    if workers == 1:
        # reading, tokenizing and writing overlap (`tokenizers` releases the GIL). Two tokenizer calls are in flight:
        # while one batch's last documents occupy one core, the next batch fills the other. The ids leave the
        # encodings here, in the writer's thread, so no call waits on that work
        calls = ThreadPoolExecutor(2, thread_name_prefix="neo-tokenize")
        pending: deque[tuple[int, Future[tuple[list[Encoding], int]]]] = deque()
        try:
            for shard, docs in _prefetch(batches):
                pending.append((shard, calls.submit(_encode, tok, docs)))
                if len(pending) == 2:
                    yield _ids_of(pending.popleft())
            while pending:
                yield _ids_of(pending.popleft())
        finally:
            calls.shutdown(wait=False, cancel_futures=True)  # an error or early close does not wait for the calls
        return
    ctx = mp.get_context("spawn")  # fork after tokenizers' thread pool started is unsafe
    with ctx.Pool(workers, initializer=_init_worker, initargs=(tok.to_str(),)) as pool:
        pending: deque[tuple[int, Any]] = deque()
        for shard, docs in batches:
            pending.append((shard, pool.apply_async(_tokenize_in_worker, (docs,))))
            if len(pending) >= 2 * workers:  # bounded: never read far ahead of the writer
                s, res = pending.popleft()
                yield s, *res.get()
        while pending:
            s, res = pending.popleft()
            yield s, *res.get()


def _refuse_more_input(out: str, tokenized: Generator[Any, None, None]) -> None:
    """An earlier encode into `out` finished: inputs that go on past its end are not the same inputs."""
    try:
        more = next(tokenized, None) is not None
    finally:
        tokenized.close()  # stops its reader threads or worker pool now
    if more:
        raise DataError(f"{out} holds a finished encode that ends before these inputs do; pass --force")


def _write_shards(
    writer: _Writer,
    tokenized: Iterator[tuple[int, list[np.ndarray], int]],
    done: list[_ShardState],
    report: Callable[[int, int], None],
) -> None:
    """Every batch into its shard, each shard committed as the stream moves past it, the last one as final;
    `report(documents, tokens)` after each batch. On any error the open shard is abandoned, not committed."""
    documents, tokens = sum(s.documents for s in done), sum(s.doc_tokens for s in done)
    try:
        for shard, docs, nbytes in tokenized:
            if shard != writer.index:
                if writer.shard is not None:
                    writer.commit(final=False)
                writer.open(shard)
            writer.add(docs, nbytes)
            documents += len(docs)
            tokens += sum(len(d) for d in docs)
            report(documents, tokens)
        if writer.shard is not None:
            writer.commit(final=True)
    except BaseException:
        writer.abort()
        raise


def _card(
    shards: list[_ShardState],
    stats: CorpusStats,
    tok: Tokenizer,
    tok_fingerprint: str,
    input_files: int,
    *,
    mode: str,
    name: str,
    chunk_size: int,
    separator: list[int],
    minimum_size: int,
    files_per: int,
) -> DatasetCard:
    """The dataset card of a finished encode, summed over its shards."""
    doc_tokens = sum(s.doc_tokens for s in shards)
    nonempty = [s for s in shards if s.records]
    return DatasetCard(
        name=name,
        mode=mode,
        tokenizer=TOKENIZER_FILE,
        tokenizer_fingerprint=tok_fingerprint,
        vocab_size=tok.get_vocab_size(),
        eos_id=eos_id(tok),
        pad_id=pad_id(tok),
        separator=separator,
        chunk_size=chunk_size if mode == "chunks" else None,
        minimum_size=minimum_size,
        files_per=files_per,
        input_files=input_files,
        skipped_files=len(stats.skipped),
        skipped=[{"path": s.path, "reason": s.reason} for s in stats.skipped],
        documents=sum(s.documents for s in shards),
        documents_dropped=sum(s.documents_dropped for s in shards),
        records=sum(s.records for s in shards),
        tokens=sum(s.tokens for s in shards),
        dropped_tokens=sum(s.dropped_tokens for s in shards),
        bytes_per_token=round(sum(s.text_bytes for s in shards) / doc_tokens, 4) if doc_tokens else 0.0,
        min_record_tokens=min((s.min_len for s in nonempty), default=0),
        max_record_tokens=max((s.max_len for s in nonempty), default=0),
        shards=[ShardInfo(s.file, s.records, s.tokens, s.documents, s.bytes) for s in shards],
    )

"""Read raw text corpora as a stream of documents.

Inputs are files, directories (searched recursively) or globs. Plain `.txt` files are one document each; JSON-lines
files (optionally zstd/gzip/xz compressed), `.json.zst` arrays, lm_dataformat `.dat.zst`, zip and tar archives yield
one document per record or member. We read these formats ourselves rather than through `lm_dataformat.Reader`,
whose tar reader and error handling we cannot make robust: a bad file must be skipped and counted, never fatal, and
never silently truncated. Everything streams, so memory stays bounded whatever the corpus size.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import json
import lzma
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import zstandard

from neo import storage
from neo.errors import DataError

# Suffixes we can read, longest first so `.jsonl.zst` wins over `.zst`.
SUFFIXES: tuple[str, ...] = (
    ".jsonl.zst.tar",
    ".jsonl.zst",
    ".jsonl.gz",
    ".jsonl.xz",
    ".jsonl.bz2",
    ".json.zst",
    ".json.gz",
    ".dat.zst",
    ".tar.gz",
    ".tar.xz",
    ".tar.bz2",
    ".tgz",
    ".tar",
    ".zip",
    ".jsonl",
    ".txt",
    ".txt.gz",
    ".txt.xz",
    ".txt.zst",
    ".xz",
    ".gz",
    ".zst",
)


class CorpusReadError(Exception):
    """A file could not be read as text; the caller skips and counts it."""


@dataclass
class SkippedFile:
    path: str
    reason: str


@dataclass
class CorpusStats:
    """What the reader saw: filled in while documents stream."""

    files: int = 0
    documents: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)


def suffix_of(path: str | Path) -> str | None:
    """The supported suffix of `path`, or None when we cannot read it."""
    name = str(path).lower()
    return next((s for s in SUFFIXES if name.endswith(s)), None)


def _resolve_remote(url: str) -> list[str]:
    """Files of one object-store input (a file, a prefix searched recursively, or a glob)."""
    if glob.has_magic(url):
        found = []
        for m in storage.glob(url):
            found.extend(f for f in storage.find(m) if suffix_of(f))
        if not found:
            raise DataError(f"the glob {url!r} matches no readable corpus file; check the pattern")
        return found
    if storage.isfile(url):
        return [url]
    if storage.isdir(url):
        return [f for f in storage.find(url) if suffix_of(f)]
    raise DataError(f"input {url!r} does not exist; pass an existing file, directory or glob")


def resolve_inputs(inputs: Sequence[str | Path]) -> list[Path | str]:
    """Expand files, directories and globs (local or gs://...) into a sorted, de-duplicated list of readable corpus
    files: local ones as Paths, object-store ones as URLs.

    Order is deterministic (sorted per input, inputs in the given order) because the encoded dataset's record order
    follows it.
    """
    if not inputs:
        raise DataError("no input given; pass one or more files, directories or globs")
    out: list[Path | str] = []
    seen: set[Path | str] = set()
    for raw in inputs:
        text = str(raw)
        if storage.is_remote(text):
            for url in _resolve_remote(text):
                if url not in seen:
                    seen.add(url)
                    out.append(url)
            continue
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and suffix_of(p))
        elif path.is_file():
            found = [path]
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            found = []
            for m in matches:
                if m.is_dir():
                    found.extend(sorted(p for p in m.rglob("*") if p.is_file() and suffix_of(p)))
                elif m.is_file() and suffix_of(m):
                    found.append(m)
            if not found:
                raise DataError(f"the glob {text!r} matches no readable corpus file; check the pattern")
        else:
            raise DataError(f"input {text!r} does not exist; pass an existing file, directory or glob")
        for p in found:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                out.append(p)
    if not out:
        joined = ", ".join(str(i) for i in inputs)
        raise DataError(f"no readable corpus files in {joined}; supported: {', '.join(sorted(set(SUFFIXES)))}")
    return out


def _decode(data: bytes, where: str) -> str:
    if b"\x00" in data:
        raise CorpusReadError(f"{where}: binary data (NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusReadError(f"{where}: invalid UTF-8 at byte {exc.start}") from None


def _json_text(obj: object, where: str) -> str:
    """The document of one JSON record: a string, or the `text` field (paragraph lists joined as lm_dataformat does)."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict) and "text" in obj:
        text = obj["text"]
        if isinstance(text, list) and all(isinstance(t, str) for t in text):
            return "\n\n".join(text)
        if isinstance(text, str):
            return text
    raise CorpusReadError(f"{where}: record has no string 'text' field")


def _jsonl(stream: IO[bytes], where: str) -> Iterator[str]:
    for lineno, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(_decode(line, f"{where}:{lineno}"))
        except json.JSONDecodeError as exc:
            raise CorpusReadError(f"{where}:{lineno}: invalid JSON ({exc.msg})") from None
        yield _json_text(obj, f"{where}:{lineno}")


def _zstd(fh: IO[bytes]) -> IO[bytes]:
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True))  # type: ignore[arg-type]


def _member_docs(name: str, data_stream: IO[bytes], where: str) -> Iterator[str]:
    """Documents of one archive member, by the member's own suffix (plain text when it has none we know)."""
    suffix = suffix_of(name)
    if suffix in (None, ".txt"):
        yield _decode(data_stream.read(), where)
    else:
        yield from _stream_by_suffix(suffix, data_stream, where)


def _tar(stream: IO[bytes], where: str) -> Iterator[str]:
    with tarfile.open(fileobj=stream, mode="r|*") as tar:  # streaming mode: never seeks, never lists the whole tar
        for member in tar:
            if not member.isfile() or member.size == 0:
                continue
            fh = tar.extractfile(member)
            if fh is None:
                continue
            yield from _member_docs(member.name, fh, f"{where}/{member.name}")


def _zip(path_or_stream: IO[bytes], where: str) -> Iterator[str]:
    with zipfile.ZipFile(path_or_stream) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            with zf.open(info) as fh:
                yield from _member_docs(info.filename, fh, f"{where}/{info.filename}")


def _dat(stream: IO[bytes], where: str) -> Iterator[str]:
    """lm_dataformat's `.dat.zst`: records prefixed by a 16-digit decimal length."""
    while True:
        head = stream.read(16)
        if not head:
            return
        try:
            n = int(head.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise CorpusReadError(f"{where}: corrupt .dat record header") from None
        body = stream.read(n)
        if len(body) != n:
            raise CorpusReadError(f"{where}: truncated .dat record")
        yield _decode(body, where)


def _json_array(stream: IO[bytes], where: str) -> Iterator[str]:
    try:
        items = json.loads(_decode(stream.read(), where))
    except json.JSONDecodeError as exc:
        raise CorpusReadError(f"{where}: invalid JSON ({exc.msg})") from None
    if not isinstance(items, list):
        raise CorpusReadError(f"{where}: expected a JSON array of documents")
    for item in items:
        yield _json_text(item, where)


def _stream_by_suffix(suffix: str, raw: IO[bytes], where: str) -> Iterator[str]:
    if suffix == ".jsonl":
        yield from _jsonl(raw, where)
    elif suffix == ".jsonl.zst":
        yield from _jsonl(_zstd(raw), where)
    elif suffix == ".jsonl.gz":
        yield from _jsonl(gzip.GzipFile(fileobj=raw), where)
    elif suffix == ".jsonl.xz":
        with lzma.LZMAFile(raw) as fh:
            yield from _jsonl(fh, where)  # type: ignore[arg-type]
    elif suffix == ".jsonl.bz2":
        yield from _jsonl(bz2.BZ2File(raw), where)  # type: ignore[arg-type]
    elif suffix == ".json.zst":
        yield from _json_array(_zstd(raw), where)
    elif suffix == ".json.gz":
        # lm_dataformat reads .json.gz as JSON lines
        yield from _jsonl(gzip.GzipFile(fileobj=raw), where)
    elif suffix == ".dat.zst":
        yield from _dat(_zstd(raw), where)
    elif suffix in (".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2"):
        yield from _tar(raw, where)
    elif suffix == ".jsonl.zst.tar":
        yield from _tar(raw, where)  # members are .jsonl.zst and dispatch on their own suffix
    elif suffix == ".zip":
        yield from _zip(raw, where)
    elif suffix in (".txt.gz", ".gz"):
        yield _decode(gzip.GzipFile(fileobj=raw).read(), where)
    elif suffix in (".txt.xz", ".xz"):
        with lzma.LZMAFile(raw) as fh:
            yield _decode(fh.read(), where)
    elif suffix in (".txt.zst", ".zst"):
        yield _decode(_zstd(raw).read(), where)
    elif suffix == ".txt":
        yield _decode(raw.read(), where)
    else:  # pragma: no cover - SUFFIXES and this dispatch are kept in step
        raise CorpusReadError(f"{where}: unsupported file type")


_DECOMPRESS_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    lzma.LZMAError,
    zstandard.ZstdError,
    tarfile.TarError,
    zipfile.BadZipFile,
    ValueError,
)


def read_file(path: str | Path) -> Iterator[str]:
    """Stream the documents of one file (local or gs://..., read through fsspec); raises CorpusReadError when the
    file is unreadable or not text.

    A file that fails part-way has already yielded its good documents; the caller records the failure.
    """
    suffix = suffix_of(path)
    if suffix is None:
        raise CorpusReadError(f"{path}: unsupported file type")
    try:
        with storage.open(path, "rb") as fh:
            yield from _stream_by_suffix(suffix, fh, str(path))
    except CorpusReadError:
        raise
    except _DECOMPRESS_ERRORS as exc:
        raise CorpusReadError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None


def iter_documents(
    files: Iterable[str | Path],
    stats: CorpusStats | None = None,
    on_skip: Callable[[SkippedFile], None] | None = None,
) -> Iterator[str]:
    """All documents of `files` in order; unreadable, binary or invalid UTF-8 files are skipped and counted.

    Empty documents are dropped (they carry no tokens). A file that breaks part-way keeps the documents read before
    the break (so the stream is the same whoever reads it) and is counted as skipped with the reason.
    """
    stats = stats if stats is not None else CorpusStats()
    for path in files:
        stats.files += 1
        try:
            for doc in read_file(path):
                if doc:
                    stats.documents += 1
                    yield doc
        except CorpusReadError as exc:
            skipped = SkippedFile(str(path), str(exc))
            stats.skipped.append(skipped)
            if on_skip is not None:
                on_skip(skipped)

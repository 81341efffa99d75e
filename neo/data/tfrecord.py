"""TFRecord files of token records, read and written without TensorFlow, on any path `neo.storage` accepts.

A TFRecord file is a sequence of frames: u64 length, masked crc32c of those 8 bytes, the data, masked crc32c of the
data (little-endian). Each frame's data is a serialized `tf.train.Example{features{feature{key: "text" value{
int64_list{value: tokens}}}}}`. The protobuf is encoded and decoded here directly (a handful of nested headers
around one packed varint array) and the varints are decoded with numpy, vectorised over a batch of records, so the
hot path never imports TensorFlow (whose import costs seconds) and works where TensorFlow's file system cannot reach
(a Cloud Storage emulator, any fsspec URL). Files stay byte-compatible with `tf.data.TFRecordDataset`.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from typing import IO, Any

import google_crc32c
import numpy as np

from neo import storage
from neo.errors import DataError

FEATURE = "text"
_KEY = FEATURE.encode()
_MASK_DELTA = 0xA282EAD8
_BATCH = 64  # records decoded per vectorised pass
_BLOCK_VALUES = 1 << 14  # values encoded per vectorised pass (8 records of 2049: fastest per value)


def tensorflow() -> Any:
    """Import TensorFlow quietly (only tests comparing against tf.data need it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # silences a start-up banner
    import tensorflow as tf

    return tf


def _masked_crc(data: bytes | memoryview) -> int:
    crc = google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


# -- protobuf: varints and the Example wrapper ------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varint_bytes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(table, keep): a [n, width] table of every value's varint bytes (3 columns for a 32k vocabulary, in 32-bit
    arithmetic when the values allow) and the mask of the bytes each value needs; `table[keep]` is the varints in
    order. Negative values are 10-byte two's complement, as protobuf writes int64."""
    v = np.asarray(values).reshape(-1)
    small = v.min() >= 0 and v.max() < 1 << 32
    u = v.astype(np.uint32) if small else v.astype(np.int64).view(np.uint64)
    width = max(1, (int(u.max()).bit_length() + 6) // 7)
    table = np.empty((u.size, width), np.uint8)
    keep = np.empty((u.size, width), bool)
    keep[:, 0] = True
    for k in range(width):
        low = ((u >> (7 * k)) & 0x7F).astype(np.uint8)
        if k + 1 < width:
            more = u >= (1 << (7 * (k + 1)))  # the value goes on past byte k
            keep[:, k + 1] = more
            low |= more.view(np.uint8) << 7
        table[:, k] = low
    return table, keep


def encode_varints(values: np.ndarray) -> bytes:
    """Protobuf varints of int64 `values`, vectorised."""
    if np.size(values) == 0:
        return b""
    table, keep = _varint_bytes(values)
    return table[keep].tobytes()


def encode_varint_rows(rows: np.ndarray) -> list[bytes]:
    """The varints of each row of a 2-D array, in one vectorised pass (a record's worth of values is too few to
    amortise numpy's per-call cost)."""
    if rows.size == 0:
        return [b""] * len(rows)
    table, keep = _varint_bytes(rows)
    data = table[keep].tobytes()
    ends = np.cumsum(keep.reshape(len(rows), -1).sum(axis=1)).tolist()
    return [data[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def example(packed: bytes) -> bytes:
    """One serialized `tf.train.Example{features{feature{key: "text" value{int64_list{value: ...}}}}}` around
    `packed`, the values' varints."""
    int64_list = b"\x0a" + _varint(len(packed)) + packed  # Int64List.value, packed
    feature = b"\x1a" + _varint(len(int64_list)) + int64_list  # Feature.int64_list
    entry = b"\x0a" + _varint(len(_KEY)) + _KEY + b"\x12" + _varint(len(feature)) + feature  # map<string, Feature>
    features = b"\x0a" + _varint(len(entry)) + entry  # Features.feature
    return b"\x0a" + _varint(len(features)) + features  # Example.features


def serialize_tokens(tokens: np.ndarray) -> bytes:
    """One serialized Example of `tokens`."""
    return example(encode_varints(tokens))


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of a message in buf[start:end]; a varint's value is the
    varint itself."""
    pos = start
    while pos < end:
        tag, pos = _read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, nxt = _read_varint(buf, pos)
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            nxt = pos + length
        elif wire == 1:
            nxt = pos + 8
        elif wire == 5:
            nxt = pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if nxt > end:
            raise ValueError("field runs past its message")
        yield number, wire, pos, nxt
        pos = nxt


def _token_spans(buf: bytes) -> list[tuple[int, int, int]]:
    """Where the `text` feature's int64 values lie in a serialized Example: (wire type, start, end) per field of the
    Int64List (wire 2: a packed run of varints; wire 0: one unpacked varint)."""
    for n1, w1, s1, e1 in _fields(buf, 0, len(buf)):  # Example
        if n1 != 1 or w1 != 2:
            continue
        for n2, w2, s2, e2 in _fields(buf, s1, e1):  # Features
            if n2 != 1 or w2 != 2:
                continue
            key, value = None, None
            for n3, w3, s3, e3 in _fields(buf, s2, e2):  # map entry
                if n3 == 1 and w3 == 2:
                    key = buf[s3:e3]
                elif n3 == 2 and w3 == 2:
                    value = (s3, e3)
            if key != _KEY or value is None:
                continue
            spans: list[tuple[int, int, int]] = []
            for n4, w4, s4, e4 in _fields(buf, *value):  # Feature
                if n4 != 3 or w4 != 2:
                    raise ValueError("feature 'text' is not an int64 list")
                spans.extend((w5, s5, e5) for n5, w5, s5, e5 in _fields(buf, s4, e4) if n5 == 1)
            return spans
    raise ValueError("no int64 feature 'text'")


def _decode(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, index of each value's last byte) of a uint8 array of concatenated varints; values are int32 when
    every varint fits in 4 bytes (28 bits), else int64."""
    if data.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if data[-1] >= 0x80:
        raise ValueError("truncated varint")
    ends = np.flatnonzero(data < 0x80)
    if ends.size == data.size:  # every value below 128
        return data.astype(np.int32), ends
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    width = int(lengths.max())
    if width > 10:
        raise ValueError("varint too long")
    dtype = np.uint32 if width <= 4 else np.uint64  # 4 varint bytes hold 28 bits: 32-bit arithmetic is enough
    low = data & 0x7F
    values = low[starts].astype(dtype)
    last = data.size - 1
    for k in range(1, width):  # one pass per byte position, over values rather than bytes
        idx = starts + k
        np.minimum(idx, last, out=idx)
        group = low[idx].astype(dtype)
        group[lengths <= k] = 0
        values |= group << dtype(7 * k)
    return values.view(np.int32) if dtype is np.uint32 else values.view(np.int64), ends


def decode_varints(data: np.ndarray) -> np.ndarray:
    """Decode a uint8 array of concatenated protobuf varints into int64 values, vectorised."""
    return _decode(data)[0].astype(np.int64)


def decode_examples(payloads: list[bytes]) -> list[np.ndarray]:
    """The `text` tokens of serialized Examples, as int32 arrays; packed varints of all payloads decode in one pass,
    the unpacked form is accepted too."""
    pieces: list[bytes] = []
    sizes: list[int] = []  # packed bytes per payload; -1: decoded separately (unpacked values)
    singles: dict[int, np.ndarray] = {}
    for i, buf in enumerate(payloads):
        spans = _token_spans(buf)
        if all(w == 2 for w, _, _ in spans):
            chunk = buf[spans[0][1] : spans[0][2]] if len(spans) == 1 else b"".join(buf[s:e] for _, s, e in spans)
            pieces.append(chunk)
            sizes.append(len(chunk))
            continue
        values = []
        for w, s, e in spans:
            if w == 0:
                values.append(_read_varint(buf, s)[0])
            else:
                values.extend(decode_varints(np.frombuffer(buf, np.uint8, e - s, s)).tolist())
        singles[i] = np.asarray(values, np.uint64).view(np.int64).astype(np.int32)
        sizes.append(-1)
    data = np.frombuffer(b"".join(pieces), np.uint8)
    values, ends = _decode(data)
    values = values.astype(np.int32, copy=False)
    bounds = np.cumsum([0] + [n for n in sizes if n >= 0])
    nonempty = bounds[1:] > bounds[:-1]
    if np.any(data[bounds[1:][nonempty] - 1] >= 0x80):
        raise ValueError("truncated varint")
    offsets = np.searchsorted(ends, bounds).tolist()  # value index where each payload starts
    out: list[np.ndarray] = []
    j = 0
    for i, n in enumerate(sizes):
        if n < 0:
            out.append(singles[i])
        else:
            out.append(values[offsets[j] : offsets[j + 1]])
            j += 1
    return out


# -- framing ----------------------------------------------------------------------------------------------------------


def frame(data: bytes) -> bytes:
    """One TFRecord frame around `data`."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))


class _FileFrames:
    """The frames of one file, read sequentially; every defect is a DataError naming the file and byte offset."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self._bytes: int | None = None  # file size, read once a skip needs it
        self._f: IO[bytes] | None = storage.open(path, "rb")

    def _header(self) -> int | None:
        assert self._f is not None
        header = self._f.read(12)
        if not header:
            return None
        if len(header) < 12:
            raise self._error("truncated record header")
        (length,) = struct.unpack_from("<Q", header)
        if struct.unpack_from("<I", header, 8)[0] != _masked_crc(header[:8]):
            raise self._error("corrupt record length (CRC mismatch)")
        return length

    def _error(self, what: str) -> DataError:
        self.close()
        return DataError(f"{self.path}: {what} at byte {self.offset}; the file is damaged, re-encode the dataset")

    def read(self) -> bytes | None:
        """The next record's data, or None at the end of the file."""
        length = self._header()
        if length is None:
            return None
        assert self._f is not None
        body = self._f.read(length + 4)
        if len(body) < length + 4:
            raise self._error("truncated record")
        data = body[:length]
        if struct.unpack_from("<I", body, length)[0] != _masked_crc(data):
            raise self._error("corrupt record data (CRC mismatch)")
        self.offset += 16 + length
        return data

    def skip(self) -> bool:
        """Skip the next record reading only its header; False at the end of the file."""
        length = self._header()
        if length is None:
            return False
        assert self._f is not None
        end = self._f.seek(length + 4, os.SEEK_CUR)
        if end > self._size():
            raise self._error("truncated record")
        self.offset += 16 + length
        return True

    def _size(self) -> int:
        if self._bytes is None:
            self._bytes = storage.size(self.path)
        return self._bytes

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class RecordStream:
    """The token records of `files` in order, as int32 arrays.

    `skip(n)` skips up to n records reading only the framing. Iteration decodes records in batches (one vectorised
    varint pass per batch).
    """

    def __init__(self, files: Iterable[str | os.PathLike[str]]) -> None:
        self._files = deque(os.fspath(f) for f in files)
        self._current: _FileFrames | None = None
        self._decoded: deque[np.ndarray] = deque()

    def _frames(self) -> _FileFrames | None:
        if self._current is None:
            if not self._files:
                return None
            path = self._files.popleft()
            if not storage.exists(path):
                raise DataError(f"{path} does not exist; re-run `neo data encode` for that dataset")
            self._current = _FileFrames(path)
        return self._current

    def _advance(self, keep: bool) -> bytes | bool | None:
        """Read (keep) or skip the next record; None/False at the end of all files."""
        while True:
            frames = self._frames()
            if frames is None:
                return None if keep else False
            got = frames.read() if keep else frames.skip()
            if got is not None and got is not False:
                return got
            frames.close()
            self._current = None

    def skip(self, n: int) -> int:
        """Skip up to `n` records; returns how many were skipped."""
        done = 0
        while done < n and self._decoded:
            self._decoded.popleft()
            done += 1
        while done < n and self._advance(keep=False):
            done += 1
        return done

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        if not self._decoded:
            raw: list[bytes] = []
            while len(raw) < _BATCH:
                data = self._advance(keep=True)
                if data is None:
                    break
                assert isinstance(data, bytes)
                raw.append(data)
            if not raw:
                raise StopIteration
            try:
                self._decoded.extend(decode_examples(raw))
            except (ValueError, IndexError) as exc:
                name = self._current.path if self._current is not None else "a shard"
                raise DataError(f"{name}: a record is not a token Example ({exc}); re-encode the dataset") from None
        return self._decoded.popleft()

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        self._files.clear()
        self._decoded.clear()


def read_records(files: Iterable[str | os.PathLike[str]], skip: int = 0) -> Iterator[np.ndarray]:
    """Iterate the token records of `files` (int32 arrays), after skipping `skip` of them."""
    stream = RecordStream(files)
    stream.skip(skip)
    try:
        yield from stream
    finally:
        stream.close()


class ShardWriter:
    """Writes one shard so that it appears complete or not at all: locally under a temporary name renamed by
    `commit()`; for a URL, into a local temporary file uploaded as one object at `commit()`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        if storage.is_remote(self.path):
            fd, self.tmp = tempfile.mkstemp(prefix="neo-shard-", suffix=".tmp")
        else:
            directory, name = os.path.split(os.path.abspath(self.path))
            self.tmp = os.path.join(directory, f".{name}.tmp")
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._f: IO[bytes] | None = os.fdopen(fd, "wb", buffering=1 << 20)
        self.bytes = 0  # the file's size so far

    def write(self, tokens: np.ndarray) -> None:
        """One record of `tokens`."""
        self.write_rows(np.asarray(tokens).reshape(1, -1))

    def write_rows(self, rows: np.ndarray) -> None:
        """Each row of a 2-D array as one record, vectorised over blocks of rows (small enough to stay in cache)."""
        assert self._f is not None
        step = max(1, _BLOCK_VALUES // max(rows.shape[1], 1))
        for start in range(0, len(rows), step):
            for packed in encode_varint_rows(rows[start : start + step]):
                self.bytes += self._f.write(frame(example(packed)))

    def commit(self) -> None:
        assert self._f is not None
        self._f.close()
        self._f = None
        if storage.is_remote(self.path):
            try:
                storage.copy(self.tmp, self.path)
            finally:
                os.unlink(self.tmp)
        else:
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)

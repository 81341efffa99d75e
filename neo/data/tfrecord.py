"""TFRecord files of token records: each `tf.train.Example` holds one int64 list feature `text`.

TensorFlow is imported lazily: tokenizer workers never need it, and its import costs seconds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

FEATURE = "text"


def tensorflow() -> Any:
    """Import TensorFlow quietly: it is only our TFRecord reader/writer, so its oneDNN notice is noise on stderr."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # no effect on reading records; silences a start-up banner
    import tensorflow as tf

    return tf


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _packed_varints(values: np.ndarray) -> bytes:
    """Protobuf's packed int64 encoding, vectorised: going through `tf.train.Example` turns every token into a Python
    int and back (twice the CPU time of this, ~1% of encoding throughput). Negatives take 10 bytes, as in protobuf."""
    v = np.asarray(values)
    if v.dtype.kind != "u" and len(v) and v.min() < 0:
        v = v.astype(np.int64).view(np.uint64)  # two's complement, as protobuf encodes a negative int64
    width = max(1, -(-int(v.max()).bit_length() // 7)) if len(v) else 1  # bytes of the widest value
    if width == 1:
        return v.astype(np.uint8).tobytes()
    groups = np.empty((len(v), width), np.uint8)  # row i: the 7-bit groups of value i, low group first
    used = np.ones((len(v), width), bool)  # which of those groups value i's varint holds
    for k in range(width):
        group = (v >> v.dtype.type(7 * k)) & v.dtype.type(0x7F)
        if k + 1 < width:
            more = v >= v.dtype.type(1 << (7 * (k + 1)))
            used[:, k + 1] = more
            group |= more.astype(v.dtype) << v.dtype.type(7)  # continuation bit: a further group follows
        groups[:, k] = group
    return groups[used].tobytes()


def _field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(payload)) + payload


_KEY = _field(0x0A, FEATURE.encode())  # map entry field 1: the key


def serialize_tokens(tokens: np.ndarray) -> bytes:
    """One serialized `tf.train.Example{features{feature{key: "text" value{int64_list{value: tokens}}}}}`.

    Hand-encoded (byte-identical to protobuf's own serialisation, see tests/data/test_tfrecord.py): Int64List.value is
    field 1, packed; Feature.int64_list field 3; the map entry holds key (1) and value (2); Features.feature field 1;
    Example.features field 1.
    """
    ints = _field(0x0A, _packed_varints(np.asarray(tokens))) if len(tokens) else b""
    entry = _KEY + _field(0x12, _field(0x1A, ints))
    return _field(0x0A, _field(0x0A, entry))


class ShardWriter:
    """Writes one shard under a temporary name; `commit()` renames it into place, so a crash leaves no shard that
    looks complete."""

    def __init__(self, path: Path) -> None:
        tf = tensorflow()

        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self._writer: Any = tf.io.TFRecordWriter(str(self.tmp))

    def write(self, tokens: np.ndarray) -> None:
        self._writer.write(serialize_tokens(tokens))

    def commit(self) -> None:
        self._writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self.tmp.unlink(missing_ok=True)


def parse_dataset(files: list[str], *, host_index: int = 0, host_count: int = 1) -> Any:
    """A tf.data dataset of int64 token vectors from `files` in order (one record after another)."""
    tf = tensorflow()

    ds = tf.data.TFRecordDataset(files)
    if host_count > 1:
        ds = ds.shard(host_count, host_index)
    spec = {FEATURE: tf.io.RaggedFeature(tf.int64)}
    return ds.map(lambda x: tf.io.parse_single_example(x, spec)[FEATURE])


def read_records(files: list[str], *, host_index: int = 0, host_count: int = 1) -> Any:
    """Iterate the token records of `files` as int64 numpy arrays."""
    return parse_dataset(files, host_index=host_index, host_count=host_count).as_numpy_iterator()

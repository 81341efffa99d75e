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


def serialize_tokens(tokens: np.ndarray) -> bytes:
    """One serialized `tf.train.Example{features{feature{key: "text" value{int64_list{value: tokens}}}}}`."""
    tf = tensorflow()
    example = tf.train.Example()
    example.features.feature[FEATURE].int64_list.value.extend(tokens.tolist())  # 2x faster than the constructors
    return example.SerializeToString()


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

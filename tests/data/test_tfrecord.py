"""The hand-encoded TFRecord examples are exactly what protobuf writes, and tf.data reads them back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neo.data.tfrecord import FEATURE, ShardWriter, read_records, serialize_tokens, tensorflow

EDGES = [0, 1, 127, 128, 255, 16383, 16384, 2**21 - 1, 2**21, 2**28, 2**31 - 1]


def _protobuf(tokens: np.ndarray) -> bytes:
    tf = tensorflow()
    example = tf.train.Example()
    example.features.feature[FEATURE].int64_list.value.extend(int(t) for t in tokens)
    return example.SerializeToString()


@pytest.mark.parametrize(
    "tokens",
    [
        np.zeros(0, np.int32),
        np.array([5], np.int32),
        np.array(EDGES, np.int32),
        np.array(EDGES, np.uint32),
        np.array([7, 300, 65535], np.uint16),
        np.array([*EDGES, 2**35, 2**63 - 1, -1, -(2**63)], np.int64),  # negatives: 10-byte varints, as protobuf
        np.random.default_rng(0).integers(0, 50_257, 5000).astype(np.int32),
    ],
    ids=["empty", "one", "edges-int32", "edges-uint32", "uint16", "int64-extremes", "random"],
)
def test_byte_identical_to_protobuf(tokens: np.ndarray) -> None:
    assert serialize_tokens(tokens) == _protobuf(tokens)


def test_written_shards_read_back_by_tf_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    records = [rng.integers(0, 2**20, int(n)).astype(np.int32) for n in rng.integers(1, 3000, 20)]
    writer = ShardWriter(tmp_path / "x.tfrecords")
    for r in records:
        writer.write(r)
    writer.commit()
    back = list(read_records([str(tmp_path / "x.tfrecords")]))
    assert len(back) == len(records)
    for got, want in zip(back, records, strict=True):
        np.testing.assert_array_equal(got, want)
    # and with the fixed-length spec a training pipeline would use
    tf = tensorflow()
    ds = tf.data.TFRecordDataset([str(tmp_path / "x.tfrecords")]).take(1)
    spec = {FEATURE: tf.io.FixedLenFeature([len(records[0])], tf.int64)}
    first = next(iter(ds.map(lambda x: tf.io.parse_single_example(x, spec)[FEATURE]))).numpy()
    np.testing.assert_array_equal(first, records[0])

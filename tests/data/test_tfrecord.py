"""Shards written by ShardWriter read back exactly, by our reader and by tf.data with a fixed-length spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neo.data.tfrecord import FEATURE, ShardWriter, read_records, tensorflow


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

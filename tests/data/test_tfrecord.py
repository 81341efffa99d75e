"""TFRecords without TensorFlow: byte-compatible with tf.data both ways, skips, host shards, typed errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neo.data.tfrecord import (
    FEATURE,
    RecordStream,
    ShardWriter,
    _varint,
    decode_examples,
    decode_varints,
    encode_varint_rows,
    encode_varints,
    frame,
    read_records,
    serialize_tokens,
    tensorflow,
)
from neo.errors import DataError


def _records(seed: int = 1, n: int = 20) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 2**20, int(k)).astype(np.int32) for k in rng.integers(0, 3000, n)]


def _write(path: Path, records: list[np.ndarray]) -> Path:
    writer = ShardWriter(path)
    for r in records:
        writer.write(r)
    writer.commit()
    return path


def test_varints_round_trip_including_wide_and_negative_values() -> None:
    values = np.array([0, 1, 127, 128, 300, 2**21, 2**31 - 1, 2**35 + 7, 2**63 - 1, -1, -(2**40)], np.int64)
    data = np.frombuffer(encode_varints(values), np.uint8)
    np.testing.assert_array_equal(decode_varints(data), values)
    with pytest.raises(ValueError, match="truncated"):
        decode_varints(data[:-1])
    # byte for byte what the one-value encoder writes, on either side of the 32-bit fast path
    for part in (values[(values >= 0) & (values < 2**32)], values[values >= 0]):
        assert encode_varints(part) == b"".join(_varint(int(v)) for v in part)


def test_rows_are_written_as_record_by_record(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 2**20, (40, 2049)).astype(np.int32)
    rows[5] = 0  # a row of one-byte varints among wider ones
    rows[6, :3] = [127, 128, 2**28]
    assert encode_varint_rows(rows) == [encode_varints(r) for r in rows]
    writer = ShardWriter(tmp_path / "rows.tfrecords")
    writer.write_rows(rows)
    writer.write_rows(rows[:0])
    writer.commit()
    assert (tmp_path / "rows.tfrecords").read_bytes() == b"".join(frame(serialize_tokens(r)) for r in rows)


def test_examples_match_tensorflow_serialization_both_ways() -> None:
    tf = tensorflow()
    for tokens in _records(2, 5):
        ours = serialize_tokens(tokens)
        example = tf.train.Example()
        example.features.feature[FEATURE].int64_list.value.extend(tokens.tolist())
        assert ours == example.SerializeToString()
        np.testing.assert_array_equal(decode_examples([example.SerializeToString()])[0], tokens)


def test_unpacked_values_and_other_features_are_accepted() -> None:
    tf = tensorflow()
    example = tf.train.Example()
    example.features.feature["other"].bytes_list.value.append(b"ignored")
    example.features.feature[FEATURE].int64_list.value.extend([5, 300, 70000])
    # Int64List field 1 written unpacked: tag 0x08 then one varint per value
    unpacked_list = b"".join(b"\x08" + encode_varints(np.array([v])) for v in (5, 300, 70000))
    feature = b"\x1a" + bytes([len(unpacked_list)]) + unpacked_list
    entry = b"\x0a\x04text\x12" + bytes([len(feature)]) + feature
    unpacked = b"\x0a" + bytes([len(entry) + 2]) + b"\x0a" + bytes([len(entry)]) + entry
    packed_tokens, unpacked_tokens = decode_examples([example.SerializeToString(), unpacked])
    np.testing.assert_array_equal(packed_tokens, [5, 300, 70000])
    np.testing.assert_array_equal(unpacked_tokens, [5, 300, 70000])
    assert packed_tokens.dtype == np.int32


def test_written_shards_read_back_by_tf_data_and_ours(tmp_path: Path) -> None:
    records = _records()
    path = _write(tmp_path / "x.tfrecords", records)
    assert [p.name for p in tmp_path.iterdir()] == ["x.tfrecords"]  # no temp file left
    tf = tensorflow()
    spec = {FEATURE: tf.io.RaggedFeature(tf.int64)}
    ds = tf.data.TFRecordDataset([str(path)]).map(lambda x: tf.io.parse_single_example(x, spec)[FEATURE])
    for got, want in zip(ds.as_numpy_iterator(), records, strict=True):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(read_records([path]), records, strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.int32


def test_tf_written_shards_read_by_ours(tmp_path: Path) -> None:
    tf = tensorflow()
    records = _records(3)
    path = tmp_path / "tf.tfrecords"
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in records:
            ex = tf.train.Example()
            ex.features.feature[FEATURE].int64_list.value.extend(r.tolist())
            w.write(ex.SerializeToString())
    back = list(read_records([path]))
    assert len(back) == len(records)
    for got, want in zip(back, records, strict=True):
        np.testing.assert_array_equal(got, want)


def test_skip_across_files(tmp_path: Path) -> None:
    records = _records(4, 150)  # more than one decode batch
    files = [str(_write(tmp_path / f"{i}.tfrecords", records[i * 50 : (i + 1) * 50])) for i in range(3)]
    stream = RecordStream(files)
    assert stream.skip(70) == 70
    np.testing.assert_array_equal(next(stream), records[70])
    assert stream.skip(10) == 10
    np.testing.assert_array_equal(next(stream), records[81])
    assert stream.skip(1000) == 150 - 82
    assert list(stream) == []
    mine = list(read_records(files, 55))
    assert len(mine) == 150 - 55
    for got, want in zip(mine, records[55:], strict=True):
        np.testing.assert_array_equal(got, want)


def test_corrupt_and_truncated_records_name_the_file_and_offset(tmp_path: Path) -> None:
    records = _records(5, 4)
    path = _write(tmp_path / "c.tfrecords", records)
    data = bytearray(path.read_bytes())
    second = 16 + len(serialize_tokens(records[0]))  # byte offset of the second record
    bad = tmp_path / "bad.tfrecords"
    flipped = bytearray(data)
    flipped[second + 12 + 3] ^= 0xFF  # inside the second record's data
    bad.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match=rf"bad.tfrecords: corrupt record data \(CRC mismatch\) at byte {second}"):
        list(read_records([bad]))
    cut = tmp_path / "cut.tfrecords"
    cut.write_bytes(bytes(data[: second + 20]))
    with pytest.raises(DataError, match=rf"cut.tfrecords: truncated record at byte {second}"):
        list(read_records([cut]))
    with pytest.raises(DataError, match=rf"cut.tfrecords: truncated record at byte {second}"):
        RecordStream([cut]).skip(5)


def test_aborted_writer_leaves_nothing(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path / "y.tfrecords")
    writer.write(np.arange(10))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_shards_in_a_bucket(gcs_emulator: object, tmp_path: Path) -> None:
    records = _records(6, 30)
    url = f"{gcs_emulator.bucket_url}/tfrecord/x.tfrecords"  # type: ignore[attr-defined]
    writer = ShardWriter(url)
    for r in records:
        writer.write(r)
    from neo import storage

    assert not storage.exists(url)  # nothing visible before commit
    writer.commit()
    stream = RecordStream([url])
    assert stream.skip(10) == 10
    rest = list(stream)
    assert len(rest) == 20
    for got, want in zip(rest, records[10:], strict=True):
        np.testing.assert_array_equal(got, want)

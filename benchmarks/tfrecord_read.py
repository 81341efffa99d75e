"""Records/s reading a chunks-mode shard: neo's TensorFlow-free reader (`neo.data.tfrecord.read_records`) against the
tf.data parse the input pipeline used before (TFRecordDataset + parse_single_example, 4 parallel calls, prefetch 64).

    python benchmarks/tfrecord_read.py --records 4000 --tokens 2049 --vocab 50257 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np

from neo.data.tfrecord import FEATURE, ShardWriter, read_records, tensorflow


def _tf_data(path: str) -> int:
    tf = tensorflow()
    spec = {FEATURE: tf.io.RaggedFeature(tf.int64)}
    ds = tf.data.TFRecordDataset([path])
    ds = ds.map(lambda x: tf.io.parse_single_example(x, spec)[FEATURE], num_parallel_calls=4, deterministic=True)
    return sum(1 for rec in ds.prefetch(64).as_numpy_iterator() if rec.astype(np.int32).size >= 0)


def _neo(path: str) -> int:
    return sum(1 for _ in read_records([path]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--tokens", type=int, default=2049, help="tokens per record (chunk_size + 1)")
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "chunks.tfrecords")
        writer = ShardWriter(path)
        for _ in range(args.records):
            writer.write(rng.integers(0, args.vocab, args.tokens))
        writer.commit()
        _tf_data(path)  # TensorFlow's import and first graph build are not part of the rate
        runs: dict[str, Callable[[str], int]] = {"neo read_records": _neo, "tf.data parse": _tf_data}
        best: dict[str, float] = {}
        for _ in range(args.repeat):  # interleaved, so load changes hit both alike
            for name, fn in runs.items():
                start = time.perf_counter()
                n = fn(path)
                rate = n / (time.perf_counter() - start)
                best[name] = max(best.get(name, 0.0), rate)
        for name, rate in best.items():
            print(f"{name}: {rate:,.0f} records/s ({rate * args.tokens / 1e6:,.1f}M tokens/s), best of {args.repeat}")
        print(f"ratio neo / tf.data: {best['neo read_records'] / best['tf.data parse']:.2f}x")


if __name__ == "__main__":
    main()

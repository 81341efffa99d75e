"""Benchmark the training input pipeline: batches/s at n_ctx 2048, batch 8, per sampling mode, plus resume cost.

The datasets are synthetic token records (large enough to take the streaming path, not the small-dataset cache),
written with the same shard writer and card as `neo data encode`. Goal: ≥ 10× the batches/s the train step consumes.

    python benchmarks/pipeline.py [--records 12000] [--batches 500]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np

from neo.data.card import DatasetCard, ShardInfo, write_card
from neo.data.config import DataConfig
from neo.data.pipeline import train_batches
from neo.data.tfrecord import ShardWriter

N_CTX, BATCH, VOCAB = 2048, 8, 50257


def make_dataset(out: Path, mode: str, records: int, shards: int = 8, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    infos, lengths = [], []
    per = records // shards
    for s in range(shards):
        name = f"bench_{s:05d}.tfrecords"
        writer = ShardWriter(out / name)
        tokens = 0
        for _ in range(per):
            n = N_CTX + 1 if mode == "chunks" else int(rng.integers(1100, 3000))
            writer.write(rng.integers(0, VOCAB, n, dtype=np.int32))
            tokens += n
            lengths.append(n)
        writer.commit()
        infos.append(ShardInfo(file=name, records=per, tokens=tokens, documents=per))
    write_card(
        out,
        DatasetCard(
            name="bench", mode=mode, tokenizer="tokenizer.json", tokenizer_fingerprint="synthetic",
            vocab_size=VOCAB, eos_id=0, pad_id=None, separator=[0], chunk_size=N_CTX if mode == "chunks" else None,
            minimum_size=1, files_per=per, documents=records, records=per * shards, tokens=sum(lengths),
            min_record_tokens=min(lengths), max_record_tokens=max(lengths), shards=infos,
        ),
    )  # fmt: skip


def rate(cfg: DataConfig, n: int, start_step: int = 0) -> tuple[float, float]:
    """(seconds to the first batch, batches/s over all n batches, start-up included)."""
    t = time.perf_counter()
    it = train_batches(cfg, n_ctx=N_CTX, batch_size=BATCH, seed=0, start_step=start_step)
    first = next(it)
    assert first.shape == (BATCH, N_CTX + 1) and first.dtype == np.int32
    t_first = time.perf_counter() - t
    for _ in itertools.islice(it, n - 1):
        pass
    return t_first, n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=12_000)
    parser.add_argument("--batches", type=int, default=3000)  # several epochs: includes every reload
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        make_dataset(root / "chunks", "chunks", args.records)
        make_dataset(root / "docs", "documents", args.records)
        print(f"datasets written in {time.perf_counter() - t:.1f} s ({args.records:,} records each)")
        for name, cfg in (
            ("chunks", DataConfig(dir=str(root / "chunks"), mode="chunks")),
            ("documents_fixed", DataConfig(dir=str(root / "docs"), mode="documents_fixed", stitch=2)),
            ("documents_random", DataConfig(dir=str(root / "docs"), mode="documents_random", stitch=2)),
        ):
            first, bps = rate(cfg, args.batches)
            print(f"{name:17s} n_ctx {N_CTX} batch {BATCH}: {bps:8.1f} batches/s, "
                  f"{bps * BATCH * N_CTX / 1e6:6.2f} M tokens/s (first batch after {first:.2f} s)")  # fmt: skip
        resume_step = args.records // BATCH // 4  # mid-epoch for both datasets
        first, _ = rate(DataConfig(dir=str(root / "docs"), mode="documents_random", stitch=2), 10, resume_step)
        print(f"resume documents_random at step {resume_step:,} (mid-epoch): first batch after {first:.2f} s")
        first, _ = rate(DataConfig(dir=str(root / "chunks"), mode="chunks"), 10, resume_step)
        print(f"resume chunks at step {resume_step:,} (mid-epoch): first batch after {first:.2f} s")


if __name__ == "__main__":
    main()

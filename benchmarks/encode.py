"""Benchmark `neo data encode` against raw `tokenizers` batch encoding of the same corpus.

The corpus is the Python standard library's source files (real text on every machine, no download), written as
.jsonl.zst archives. "Raw" is the ceiling: documents already in memory, one `encode_batch_fast` call per 1024
documents, no reading, no writing. Goal: neo with one worker ≥ 0.9× raw, and more workers scale where cores allow.

Two comparisons, because `tokenizers` itself is multi-threaded:
- all cores: neo's default (`--workers 1` lets `tokenizers` use every core) against raw on every core. On a machine
  with few cores this charges neo's reading, serialising and writing against the tokenizer's own cores.
- one core per worker: the tokenizer restricted to one thread (`TOKENIZERS_PARALLELISM=false`, as each process of
  `--workers N > 1` is) against raw on one thread: what one worker delivers, and how N workers scale.

    python benchmarks/encode.py [--mb 30] [--workers 1 2 4] [--vocab-size 32000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sysconfig
import tempfile
import time
from pathlib import Path

import zstandard


def write_corpus(root: Path, max_bytes: int) -> list[str]:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    docs, total = [], 0
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            docs.append(text)
            total += len(text.encode())
        if total >= max_bytes:
            break
    root.mkdir(parents=True)
    per = -(-len(docs) // 8)
    for i in range(8):
        lines = "\n".join(json.dumps({"text": d}) for d in docs[i * per : (i + 1) * per])
        (root / f"part{i}.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=30.0, help="corpus size in MB of text")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--mode", default="chunks", choices=["documents", "chunks"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from tokenizers import Tokenizer

    from neo.data.encode import encode_dataset
    from neo.data.tokenizer import train_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        docs = write_corpus(root / "corpus", int(args.mb * 1e6))
        nbytes = sum(len(d.encode()) for d in docs)
        print(f"corpus: {len(docs):,} documents, {nbytes / 1e6:.1f} MB, {os.cpu_count()} CPUs")
        t = time.perf_counter()
        train_tokenizer([root / "corpus"], root / "tok", args.vocab_size)
        print(f"tokenizer train: {time.perf_counter() - t:.1f} s")
        tok = Tokenizer.from_file(str(root / "tok" / "tokenizer.json"))

        from neo.data.tfrecord import tensorflow

        t = time.perf_counter()
        tensorflow()  # a one-off start-up cost of the CLI, not per-token throughput
        print(f"TensorFlow import (once per encode): {time.perf_counter() - t:.1f} s")

        def parallel(on: bool) -> None:
            """`tokenizers` reads this on every batch call: whether one call may use every core."""
            os.environ["TOKENIZERS_PARALLELISM"] = "true" if on else "false"

        def raw_rate(all_cores: bool) -> float:
            parallel(all_cores)
            t = time.perf_counter()
            tokens = 0
            for i in range(0, len(docs), 1024):
                encs = tok.encode_batch_fast(docs[i : i + 1024], add_special_tokens=False)
                tokens += sum(len(e.ids) for e in encs)
            return tokens / (time.perf_counter() - t)

        def neo_rate(workers: int, rep: int, all_cores: bool = True) -> tuple[float, float, float]:
            parallel(all_cores)
            t = time.perf_counter()
            out = root / f"ds{workers}_{rep}_{all_cores}"
            card = encode_dataset([root / "corpus"], out, root / "tok", mode=args.mode, workers=workers)
            dt = time.perf_counter() - t
            # the documents' own tokens, as raw counts them: no separators (only kept documents have one)
            kept = card.documents - card.documents_dropped if args.mode == "documents" else card.documents
            doc_tokens = card.tokens - kept * len(card.separator) + card.dropped_tokens
            return doc_tokens / dt, card.documents / dt, dt

        def startup() -> float:
            """The per-run fixed cost (tokenizer load and fingerprint, input stat, card): a one-document encode."""
            (root / "one").mkdir(exist_ok=True)
            (root / "one" / "doc.txt").write_text(docs[0])
            t = time.perf_counter()
            encode_dataset([root / "one"], root / "one_out", root / "tok", mode=args.mode, force=True)
            return time.perf_counter() - t

        def report(label: str, run: tuple[float, float, float], base: float, pairs: list[float]) -> None:
            rate, docs_s, dt = run
            steady = rate * dt / max(dt - fixed, 1e-9)
            print(
                f"{label}: {rate:,.0f} tokens/s, {docs_s:,.0f} docs/s, {rate / base:.2f}x raw "
                f"({steady / base:.2f}x without the start-up); paired runs: median {statistics.median(pairs):.2f}x "
                f"({', '.join(f'{r:.2f}' for r in pairs)})"
            )

        # the machine may be shared: alternate the runs and keep each one's best of `repeat`; the median of each neo
        # run over the raw run just before it is steadier when the load changes between runs
        raw, raw1, fixed = 0.0, 0.0, float("inf")
        best = {w: (0.0, 0.0, 0.0) for w in args.workers}
        best1 = (0.0, 0.0, 0.0)  # one worker, one tokenizer thread
        paired: dict[int, list[float]] = {w: [] for w in args.workers}  # neo / the raw run just before it
        paired1: list[float] = []
        scaling: dict[int, list[float]] = {w: [] for w in args.workers}  # neo / the one-thread raw run before it
        for rep in range(args.repeat):
            raw_now = raw_rate(all_cores=True)
            raw = max(raw, raw_now)
            fixed = min(fixed, startup())
            runs = {w: neo_rate(w, rep) for w in args.workers}
            for w, run in runs.items():
                paired[w].append(run[0] / raw_now)
                best[w] = max(best[w], run)
            raw1_now = raw_rate(all_cores=False)
            raw1 = max(raw1, raw1_now)
            runs[1] = neo_rate(1, rep, all_cores=False)  # processes of --workers > 1 use one thread each already
            paired1.append(runs[1][0] / raw1_now)
            best1 = max(best1, runs[1])
            for w in args.workers:
                scaling[w].append(runs[w][0] / raw1_now)
        parallel(True)
        print(f"raw tokenizers encode_batch_fast, all cores: {raw:,.0f} tokens/s (best of {args.repeat})")
        print(f"raw tokenizers encode_batch_fast, one thread: {raw1:,.0f} tokens/s (best of {args.repeat})")
        print(f"neo start-up, included below (a one-document encode): {fixed:.2f} s")
        print("all cores (neo's default), against raw on all cores:")
        for w in args.workers:
            report(f"  neo data encode --mode {args.mode} --workers {w}", best[w], raw, paired[w])
        print("one core per worker, against raw on one thread:")
        report(f"  neo data encode --mode {args.mode} --workers 1, one tokenizer thread", best1, raw1, paired1)
        for w in args.workers:
            print(f"  --workers {w}: median {statistics.median(scaling[w]):.2f}x one-thread raw")


if __name__ == "__main__":
    main()

"""Peak memory of `neo data encode` as the corpus grows: encoding streams, so the peak RSS must not grow with it.

For each size, one .jsonl.zst archive of that much text (the standard library's source files, repeated with a
varying suffix so no two documents are equal) is encoded by the real command in a fresh process, and its peak RSS
(`ru_maxrss` of the child) is printed with the wall time. The issue's figure is a 3 GB archive under 1.5 GiB; two
sizes a few times apart on this machine show whether the peak depends on the size at all.

    python benchmarks/encode_memory.py [--mb 100 400] [--vocab-size 32000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import zstandard


def write_archive(path: Path, max_bytes: int) -> int:
    """One .jsonl.zst archive of ~max_bytes of text, written as a stream (this script stays small too)."""
    sources = [p.read_text(errors="replace") for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))]
    written, n = 0, 0
    with path.open("wb") as raw, zstandard.ZstdCompressor().stream_writer(raw) as out:
        while written < max_bytes:
            text = sources[n % len(sources)] + f"\n# copy {n}\n"
            out.write((json.dumps({"text": text}) + "\n").encode())
            written += len(text.encode())
            n += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, nargs="+", default=[100.0, 400.0])
    parser.add_argument("--vocab-size", type=int, default=32000)
    args = parser.parse_args()
    neo = str(Path(sys.executable).with_name("neo"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "tok_corpus").mkdir()
        write_archive(root / "tok_corpus" / "t.jsonl.zst", 20_000_000)
        subprocess.run(
            [neo, "tokenizer", "train", str(root / "tok_corpus"), "--out", str(root / "tok"),
             "--vocab-size", str(args.vocab_size)],
            check=True, capture_output=True,
        )  # fmt: skip
        for mb in args.mb:
            corpus = root / f"c{mb:g}"
            corpus.mkdir()
            nbytes = write_archive(corpus / "corpus.jsonl.zst", int(mb * 1e6))
            packed = (corpus / "corpus.jsonl.zst").stat().st_size
            start = time.perf_counter()
            proc = subprocess.Popen(
                [neo, "data", "encode", str(corpus), "--out", str(root / f"ds{mb:g}"),
                 "--tokenizer", str(root / "tok" / "tokenizer.json"), "--mode", "chunks"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak (the `neo` script execs once: same pid)
            seconds = time.perf_counter() - start
            if status != 0:
                raise SystemExit(f"neo data encode failed (status {status})")
            peak = usage.ru_maxrss * 1024
            print(
                f"{nbytes / 1e6:,.0f} MB of text ({packed / 1e6:,.0f} MB .jsonl.zst): {seconds:.0f} s, "
                f"peak RSS {peak / 2**30:.2f} GiB",
                flush=True,
            )


if __name__ == "__main__":
    main()

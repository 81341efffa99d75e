"""`neo data encode` as a whole process against a whole Python process calling raw `tokenizers` on the same files.

The corpus is the Python standard library's sources as .jsonl.zst archives (real text on every machine, no download)
and a byte-level BPE tokenizer trained on it once. Each round runs, alternating, as fresh processes timed from launch
to exit:
- raw: a Python process that streams the same archives (zstandard + json), calls `encode_batch_fast` on batches of
  1024 documents with every core (the default), and counts the tokens: no serialising, no writing;
- neo: `neo data encode CORPUS --out DIR --tokenizer TOK --mode M` exactly as a user types it, default workers.
Goal (issue 20): neo ≥ 0.9× raw's tokens/s.

    python benchmarks/encode_e2e.py [--mb 20] [--rounds 3] [--mode chunks]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from as_installed import byte_compile_neo

RAW_SCRIPT = """
import io, json, sys
from pathlib import Path
import zstandard
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
tokens, batch = 0, []
def flush():
    global tokens, batch
    tokens += sum(len(e.ids) for e in tok.encode_batch_fast(batch, add_special_tokens=False))
    batch = []
for path in sorted(Path(sys.argv[2]).glob("*.jsonl.zst")):
    with path.open("rb") as f:
        for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8"):
            if line.strip():
                batch.append(json.loads(line)["text"])
                if len(batch) == 1024:
                    flush()
if batch:
    flush()
print(tokens)
"""


def timed(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=20.0, help="corpus size in MB of text")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", default="chunks", choices=["documents", "chunks"])
    parser.add_argument("--vocab-size", type=int, default=32000)
    args = parser.parse_args()
    byte_compile_neo()

    sys.path.insert(0, str(Path(__file__).parent))
    from encode import write_corpus

    from neo.data.tokenizer import train_tokenizer

    neo = shutil.which("neo") or str(Path(sys.executable).parent / "neo")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        docs = write_corpus(root / "corpus", int(args.mb * 1e6))
        print(
            f"corpus: {len(docs):,} documents, {sum(len(d.encode()) for d in docs) / 1e6:.1f} MB, "
            f"{os.cpu_count()} CPUs, mode {args.mode}"
        )
        train_tokenizer([root / "corpus"], root / "tok", args.vocab_size)
        tok_file = str(root / "tok" / "tokenizer.json")
        raw_cmd = [sys.executable, "-c", RAW_SCRIPT, tok_file, str(root / "corpus")]
        raws, neos, ratios = [], [], []
        for r in range(args.rounds):
            raw_s, out = timed(raw_cmd)
            tokens = int(out.strip())
            out_dir = root / f"ds{r}"
            neo_s, _ = timed(
                [
                    neo,
                    "data",
                    "encode",
                    str(root / "corpus"),
                    "--out",
                    str(out_dir),
                    "--tokenizer",
                    tok_file,
                    "--mode",
                    args.mode,
                ]
            )
            shutil.rmtree(out_dir)
            raws.append(tokens / raw_s)
            neos.append(tokens / neo_s)
            ratios.append(raw_s / neo_s)
            print(
                f"round {r + 1}: raw {raw_s:.2f} s ({tokens / raw_s:,.0f} tokens/s), neo {neo_s:.2f} s "
                f"({tokens / neo_s:,.0f} tokens/s): "
                f"{raw_s / neo_s:.2f}x",
                flush=True,
            )
        print(
            f"median: raw {statistics.median(raws):,.0f} tokens/s, neo {statistics.median(neos):,.0f} tokens/s, "
            f"neo / raw {statistics.median(ratios):.2f}x (rounds: {', '.join(f'{x:.2f}' for x in ratios)})"
        )


if __name__ == "__main__":
    main()

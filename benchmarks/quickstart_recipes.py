"""Compare quickstart recipes: held-out bits/byte after N steps of `neo train` on the embedded corpus, per tokenizer
size, learning rate and model shape, each a whole `neo train` process; plus its training tokens/s.

    python benchmarks/quickstart_recipes.py [--workdir DIR] [--recipes NAME ...]

The corpus, tokenizers and datasets are made once under --workdir. Losses do not depend on machine load (training is
deterministic); tokens/s does: compare it only between recipes run one after another on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BASE = [
    "model=tiny",
    "model.n_embd=128",
    "model.n_head=4",
    "model.n_layer=4",
    'model.attention_types=[[["global","local"],2]]',
    "data.mode=documents_random",
    "data.stitch=4",
    "train.batch_size=16",
    "train.log_every=10",
    "train.eval_steps=8",
    "optimizer.warmup_steps=30",
    "optimizer.weight_decay=0.1",
]
# name: (tokenizer size, steps, extra overrides)
RECIPES: dict[str, tuple[int, int, list[str]]] = {
    "v2048-lr3e-3-300": (2048, 300, ["optimizer.lr=3e-3"]),  # the quickstart before 2026-12-02
    "v2048-lr3e-3-900": (2048, 900, ["optimizer.lr=3e-3"]),
    "v4096-lr3e-3-900": (4096, 900, ["optimizer.lr=3e-3"]),
    "v8192-lr3e-3-800": (8192, 800, ["optimizer.lr=3e-3"]),
    "v8192-lr2e-3-800": (8192, 800, ["optimizer.lr=2e-3"]),  # the quickstart's recipe
    "v8192-lr1.2e-3-800": (8192, 800, ["optimizer.lr=1.2e-3"]),
    "v8192-lr2e-3-800-global": (8192, 800, ["optimizer.lr=2e-3", 'model.attention_types=[[["global"],4]]']),
}


def neo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neo.cli.app", *args], capture_output=True, text=True, check=True)


def dataset(workdir: Path, vocab: int) -> Path:
    """The corpus encoded with a `vocab`-token tokenizer trained on its training part (made once)."""
    from neo.data.stdlib_corpus import write_corpus

    corpus = workdir / "corpus"
    if not (corpus / "train").is_dir():
        write_corpus(corpus)
    out, tok = workdir / f"data{vocab}", workdir / f"tok{vocab}"
    if not (out / "eval" / "dataset.yaml").is_file():
        neo("tokenizer", "train", str(corpus / "train"), "--vocab-size", str(vocab), "--out", str(tok))
        for split in ("train", "eval"):
            neo("data", "encode", str(corpus / split), "--tokenizer", str(tok),
                "--out", str(out / split), "--mode", "documents", "--name", split)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/neo_quickstart_recipes"))
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    args = parser.parse_args()
    for name in args.recipes:
        vocab, steps, extra = RECIPES[name]
        data, run = dataset(args.workdir, vocab), args.workdir / "runs" / name
        started = time.perf_counter()
        neo("train", *BASE, *extra, f"model.n_vocab={vocab}", f"train.steps={steps}",
            f"train.checkpoint_every={steps // 2}", f"data.dir={data / 'train'}", f"data.eval_dir={data / 'eval'}",
            f"train.run_dir={run}")  # fmt: skip
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        evals = " ".join(f"{r['step']}:{r['eval_bpb']:.3f}" for r in rows if "eval_bpb" in r)
        tps = sorted(r["tokens_per_sec"] for r in rows if "tokens_per_sec" in r)
        wall = time.perf_counter() - started
        print(f"{name:26s} bits/byte at steps {evals}   median {tps[len(tps) // 2]:,.0f} tok/s   {wall:.0f} s")


if __name__ == "__main__":
    main()

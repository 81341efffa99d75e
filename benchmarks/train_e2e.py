"""`neo train` as users run it, against a plain transformers + AdamW loop, on the same real data.

Both sides train the benchmark model of `train.py` (6 layers, 384 wide, n_ctx 256, 8192 vocab, batch 8) on the same
tokens: the standard library's docstrings (neo's embedded corpus), tokenized by a BPE tokenizer trained on them and
encoded into TFRecord chunks by `neo tokenizer train` / `neo data encode`.

- neo: the `neo train` command in a fresh process (the real CLI: Hydra config, TFRecord input pipeline, progress
  line, metrics.jsonl, TensorBoard, checkpoint at the end). Throughput is what the run logs in metrics.jsonl
  (tokens_per_sec of each logged window after the first), and the whole process's wall time is printed too.
- baseline: a Python process that loads the same token chunks into memory (no input cost at all) and runs
  GPTNeoForCausalLM (torch, AdamW) step after step, timing each step after warm-up.
- bare: neo's jitted step alone (`train.py`'s measurement), so the loop's cost shows as the gap to it.
The implementations take turns for `--rounds` rounds; each round is printed, with the medians and their ratio.

`--precisions` runs each comparison in float32 (both sides' default) and/or in bfloat16 mixed precision: neo with
`model.precision=bfloat16` (float32 parameters and optimizer, bf16 products and activations), the baseline under
`torch.autocast("cpu", dtype=torch.bfloat16)`, as transformers' Trainer runs `--bf16` on a CPU.

    python benchmarks/train_e2e.py [--steps 60] [--rounds 3] [--precisions float32,bfloat16] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from as_installed import byte_compile_neo

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train import BATCH, BENCH_OVERRIDES, N_CTX, N_VOCAB, torch_model  # noqa: E402

WARMUP = 5


def neo_command() -> list[str]:
    """The installed `neo` console script (it restarts itself with malloc on huge pages, as users get it)."""
    script = Path(sys.executable).with_name("neo")
    return [str(script)] if script.exists() else [sys.executable, "-m", "neo.cli.entry"]


def prepare(workdir: Path) -> Path:
    """Corpus, tokenizer and chunked dataset, made once with the real commands; returns the dataset directory."""
    data = workdir / "data"
    if (data / "dataset.yaml").exists():
        return data
    from neo.data.stdlib_corpus import write_corpus

    shutil.rmtree(workdir, ignore_errors=True)
    corpus, _, _ = write_corpus(workdir / "corpus")
    neo = neo_command()
    subprocess.run(
        [*neo, "tokenizer", "train", str(corpus), "--out", str(workdir / "tok"), "--vocab-size", str(N_VOCAB)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *neo,
            "data",
            "encode",
            str(corpus),
            "--out",
            str(data),
            "--tokenizer",
            str(workdir / "tok" / "tokenizer.json"),
            "--mode",
            "chunks",
            "--chunk-size",
            str(N_CTX),
        ],
        check=True,
        capture_output=True,
    )
    return data


def overrides(data: Path, run: Path, steps: int, precision: str) -> list[str]:
    return [
        *BENCH_OVERRIDES,
        f"model.precision={precision}",
        f"train.steps={steps}",
        "train.log_every=5",
        f"train.checkpoint_every={steps}",
        "train.eval_steps=0",
        f"data.dir={data}",
        f"train.run_dir={run}",
    ]


def run_neo(data: Path, workdir: Path, steps: int, precision: str) -> dict[str, float]:
    run = workdir / "run"
    shutil.rmtree(run, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([*neo_command(), "train", *overrides(data, run, steps, precision)], check=True, capture_output=True)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    windows = [r["tokens_per_sec"] for r in rows if "loss" in r and r["step"] > WARMUP]
    return {"tps": statistics.median(windows), "wall": wall}


def torch_loop(data: str, steps: int, precision: str) -> dict[str, float]:
    """The baseline's process: tokens in memory, then the plain training loop (its forward pass under autocast in
    bfloat16)."""
    import numpy as np
    import torch

    from neo.data.card import dataset_card
    from neo.data.tfrecord import read_records

    start = time.perf_counter()
    card = dataset_card(data)
    tokens = np.concatenate(list(read_records(card.shard_paths(data))))
    n = len(tokens) // (N_CTX + 1)
    chunks = torch.from_numpy(tokens[: n * (N_CTX + 1)].reshape(n, N_CTX + 1).astype(np.int64))
    model = torch_model()
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.01)
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        batch = chunks[(step * BATCH) % (n - BATCH) :][:BATCH]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            loss = model(batch[:, :-1], labels=batch[:, :-1]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    steady = times[WARMUP:]
    return {"tps": BATCH * N_CTX * len(steady) / sum(steady), "wall": time.perf_counter() - start}


def run_python(args: list[str], huge_pages: bool = True) -> dict[str, float]:
    from neo.runtime import huge_page_env

    env = (huge_page_env() if huge_pages else None) or dict(os.environ)
    out = subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/neo_train_e2e"))
    parser.add_argument("--precisions", default="float32,bfloat16", help="float32 and/or bfloat16, comma-separated")
    parser.add_argument("--torch-one", help=argparse.SUPPRESS)  # internal: one baseline measurement
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)  # of the internal measurement
    args = parser.parse_args()
    byte_compile_neo()
    if args.torch_one:
        print(json.dumps(torch_loop(args.torch_one, args.steps, args.precision)))
        return
    data = prepare(args.workdir)
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for i in range(args.rounds):
        for precision in args.precisions.split(","):
            for name, measure in implementations(args, data, precision).items():
                runs.setdefault((precision, name), []).append(measure())
                tps = runs[precision, name][-1]["tps"]
                print(f"round {i + 1}: {precision} {name}: {tps:,.0f} tokens/s", file=sys.stderr, flush=True)
    print(f"{os.cpu_count()} cores; {args.rounds} rounds of {args.steps} steps (first {WARMUP} not timed)")
    for precision in args.precisions.split(","):
        report(precision, {name: rows for (p, name), rows in runs.items() if p == precision})


def implementations(args: argparse.Namespace, data: Path, precision: str) -> dict[str, Callable[[], dict]]:
    """neo's command, the baseline, and neo's bare step, each measured in a fresh process."""
    steps, timed, warmup = str(args.steps), str(args.steps - WARMUP), str(WARMUP)
    return {
        "neo train (whole command)": lambda: run_neo(data, args.workdir, args.steps, precision),
        "transformers + AdamW loop": lambda: run_python(
            [__file__, "--torch-one", str(data), "--steps", steps, "--precision", precision], huge_pages=False
        ),
        "neo bare step (train.py)": lambda: run_python(
            [str(HERE / "train.py"), "--one", "neo", "--steps", timed, "--warmup", warmup, "--precision", precision]
        ),
    }


def report(precision: str, runs: dict[str, list[dict[str, float]]]) -> None:
    print(f"\n{precision}")
    print(f"{'implementation':<30}{'median tok/s':>13}{'median wall':>12}   each round (tokens/s)")
    for name, rows in runs.items():
        tps = statistics.median(r["tps"] for r in rows)
        walls = [r["wall"] for r in rows if "wall" in r]
        wall = f"{statistics.median(walls):.1f}s" if walls else "-"
        each = ", ".join(f"{r['tps']:,.0f}" for r in rows)
        print(f"{name:<30}{tps:>13,.0f}{wall:>12}   {each}")
    med = [statistics.median(r["tps"] for r in rows) for rows in runs.values()]
    print(f"neo train / transformers loop: {med[0] / med[1]:.2f}x; neo train / bare step: {med[0] / med[2]:.3f}")


if __name__ == "__main__":
    main()

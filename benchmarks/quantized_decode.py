"""Quantized decoding (`neo sample --weights`): batch-1 speed of float32, bfloat16 and int8 weights, and their quality.

Speed: a neo_125M-shaped model with random weights, laid out for decoding and converted once (as `neo sample` does
at load), a 32-token prompt, `--new` greedy tokens at batch 1; after one warm-up call per kind, `--rounds` rounds
that alternate the three kinds; tokens/s is new tokens over the whole call (prefill included). Also the bytes each
kind streams per token.

Quality: a trained run (`--run`, with held-out data `--eval-dir`; by default the quickstart's, trained first when
`--workdir` has none): the mean held-out cross-entropy of each kind over `--eval-seqs` sequences, through the same
decoding-layout forward and again token by token through the KV cache as `neo sample` decodes (low-bit weights
decode with a bfloat16 cache), and the first position where each kind's greedy text (64 tokens) parts from
float32's.

    python benchmarks/quantized_decode.py [--rounds 3] [--new 128] [--workdir DIR | --run RUN --eval-dir DATA]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

KINDS = ("float32", "bfloat16", "int8")


def speed(rounds: int, new: int) -> None:
    import flax.linen as nn
    import jax

    from neo.config import compose
    from neo.model.decode import for_decoding, generate
    from neo.model.params import init_params
    from neo.model.quantize import quantize_params, weight_bytes

    cfg = compose(["model=neo_125M"]).model
    dcfg, dparams = for_decoding(cfg, nn.meta.unbox(init_params(cfg, seed=0)))
    held = {kind: jax.block_until_ready(quantize_params(dparams, kind)) for kind in KINDS}
    prompt = [np.random.default_rng(0).integers(0, cfg.n_vocab, 32).tolist()]

    def call(kind: str) -> float:
        start = time.perf_counter()
        generate(dcfg, held[kind], prompt, max_new_tokens=new, temperature=0.0)  # weights already converted
        return time.perf_counter() - start

    for kind in KINDS:
        call(kind)  # compile
    rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for r in range(rounds):
        for kind in KINDS:
            rates[kind].append(new / call(kind))
        print(f"round {r + 1}: " + ", ".join(f"{k} {rates[k][-1]:.1f} tokens/s" for k in KINDS), flush=True)
    base = statistics.median(rates["float32"])
    for kind in KINDS:
        rate = statistics.median(rates[kind])
        print(f"{kind}: {weight_bytes(held[kind]) / 2**20:.0f} MiB of weights, median {rate:.1f} tokens/s, "
              f"{rate / base:.2f}x float32")  # fmt: skip


def quality(run_dir: Path, eval_dir: Path, eval_seqs: int) -> None:
    import jax
    import jax.numpy as jnp
    import optax

    from neo.data.tfrecord import read_records
    from neo.model.decode import for_decoding, forward_fn, generate, init_cache, kv_dtype, padded_length
    from neo.model.quantize import quantize_params
    from neo.model.transformer import GPTNeo
    from neo.train.checkpoint import load_run

    cfg, params, step = load_run(run_dir)
    dcfg, dparams = for_decoding(cfg.model, params)
    n = dcfg.n_ctx + 1
    stream = np.concatenate(list(read_records(sorted(eval_dir.glob("*.tfrecords")))))
    seqs = stream[: (len(stream) // n) * n].reshape(-1, n)[:eval_seqs]
    model = GPTNeo(dcfg)

    @jax.jit
    def loss(p: object, batch: jax.Array) -> jax.Array:
        logits = model.apply({"params": p}, batch[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch[:, 1:]).mean()

    def cached_loss(p: object, batch: np.ndarray) -> float:
        """The same loss, each position's logits from a one-token decoding step over the cache so far."""
        rows, forward = batch.shape[0], forward_fn(dcfg)
        cache = init_cache(dcfg, rows, padded_length(n - 1), dtype=kv_dtype(dcfg, p))
        ones, logits = np.ones((rows, 1), bool), []
        for t in range(n - 1):
            out, cache = forward(p, batch[:, t : t + 1], np.full((rows, 1), t, np.int32), ones, cache, np.int32(t))
            logits.append(out)
        stacked = jnp.stack(logits, axis=1).astype(jnp.float32)
        return float(optax.softmax_cross_entropy_with_integer_labels(stacked, batch[:, 1:]).mean())

    print(f"run {run_dir} (step {step}), {len(seqs)} held-out sequences of {n - 1} tokens")
    prompt = [seqs[0][:16].tolist()]
    losses, cached, texts = {}, {}, {}
    for kind in KINDS:
        held = quantize_params(dparams, kind)
        losses[kind] = float(np.mean([loss(held, seqs[i : i + 8]) for i in range(0, len(seqs), 8)]))
        cached[kind] = float(np.mean([cached_loss(held, seqs[i : i + 32]) for i in range(0, len(seqs), 32)]))
        texts[kind] = generate(dcfg, held, prompt, max_new_tokens=64, temperature=0.0)[0]
    for kind in KINDS:
        parted = next((i for i, (a, b) in enumerate(zip(texts[kind], texts["float32"], strict=True)) if a != b), None)
        rel, rel_cached = (100 * (x[kind] / x["float32"] - 1) for x in (losses, cached))
        print(f"{kind}: held-out loss {losses[kind]:.5f} ({rel:+.3f}% vs float32), through the KV cache "
              f"{cached[kind]:.5f} ({rel_cached:+.3f}%); greedy 64 tokens "
              f"{'identical' if parted is None else f'part at token {parted}'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="speed rounds (0 = quality only)")
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--workdir", type=Path, default=Path("neo_quickstart"))
    parser.add_argument("--run", type=Path)
    parser.add_argument("--eval-dir", type=Path)
    parser.add_argument("--eval-seqs", type=int, default=64)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    if args.rounds:
        speed(args.rounds, args.new)
    if args.skip_quality:
        return
    run_dir, eval_dir = args.run, args.eval_dir
    if run_dir is None:
        run_dir, eval_dir = args.workdir / "run", args.workdir / "data" / "eval"
        if not (run_dir / "config.yaml").is_file():
            neo = str(Path(sys.executable).with_name("neo"))
            subprocess.run([neo, "quickstart", "--workdir", str(args.workdir)], check=True)
    quality(run_dir, eval_dir, args.eval_seqs)


if __name__ == "__main__":
    main()

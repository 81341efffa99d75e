"""Generation throughput: neo's KV-cache decoder vs Hugging Face `generate`, same weights, same thread count.

A neo_125M-shaped model with random weights (converted to transformers with `neo.model.hf.to_hf`), a 128-token
prompt, 256 new tokens, greedy, at batch 1 and batch 8. Each implementation runs in its own process (PyTorch's
OpenMP threads keep spinning after each op and, in one process with JAX, slowed neo's decoding by 20%): after one
warm-up (compiling) run, `--rounds` timed calls; prints the median tokens/s (new tokens over a whole call, prefill
included), the median time to first token (a call with one new token), the first run's time, and the ratio.

    python benchmarks/sample.py [--new 256] [--prompt 128] [--batches 1 8] [--rounds 3] [--skip-torch]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

import numpy as np


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--only", choices=["neo", "transformers"], help=argparse.SUPPRESS)  # one child process
    args = parser.parse_args()
    if args.only is None:
        compare(args)
        return

    import flax.linen as nn

    from neo.config import compose
    from neo.model.decode import for_decoding, generate
    from neo.model.params import init_params

    cfg = compose(["model=neo_125M"]).model
    params = nn.meta.unbox(init_params(cfg, seed=0))
    decode_cfg, decode_params = for_decoding(cfg, params)  # once, as loading does: generate would per call
    rng = np.random.default_rng(0)
    runners: dict[str, Callable[[np.ndarray, int], None]] = {}
    if args.only == "neo":
        runners[NEO] = lambda ids, new: generate(
            decode_cfg, decode_params, ids.tolist(), max_new_tokens=new, temperature=0.0
        )
    else:
        import torch
        from transformers import GPTNeoConfig, GPTNeoForCausalLM

        from neo.model.hf import to_hf

        torch.set_num_threads(os.cpu_count() or 1)
        hf_config, state = to_hf(cfg, params)
        model = GPTNeoForCausalLM(GPTNeoConfig(**hf_config)).eval()
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)

        def hf_generate(ids: np.ndarray, new: int) -> None:
            x = torch.from_numpy(ids)
            with torch.no_grad():
                model.generate(
                    x, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0,
                    attention_mask=torch.ones_like(x),
                )  # fmt: skip

        runners[HF] = hf_generate

    for batch in args.batches:
        ids = rng.integers(0, cfg.n_vocab, (batch, args.prompt)).astype(np.int64)
        ((name, run),) = runners.items()
        full = partial(run, ids, args.new)
        first = timed(full)
        run(ids, 1)  # compiles neo's one-new-token cache bucket
        tps = [batch * args.new / timed(full) for _ in range(args.rounds)]
        ttft = [timed(partial(run, ids, 1)) for _ in range(args.rounds)]
        row = {"name": name, "batch": batch, "tps": float(np.median(tps)), "ttft": float(np.median(ttft))}
        print("RESULT " + json.dumps({**row, "first": first, "rounds": tps}), flush=True)


NEO, HF = "neo (jax, KV cache)", "transformers generate"


def compare(args: argparse.Namespace) -> None:
    """Run each implementation in a child process of its own, then print the table and the ratios."""
    results: dict[tuple[str, int], dict] = {}
    for only in ["neo"] + ([] if args.skip_torch else ["transformers"]):
        cmd = [sys.executable, __file__, "--only", only, "--new", str(args.new), "--prompt", str(args.prompt)]
        cmd += ["--rounds", str(args.rounds), "--batches", *map(str, args.batches)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("RESULT "):
                row = json.loads(line[len("RESULT ") :])
                results[(row["name"], row["batch"])] = row
    print(f"{os.cpu_count()} cores; neo_125M shape, prompt {args.prompt}, {args.new} new tokens, greedy")
    print(f"{'implementation':<28}{'batch':>6}{'tokens/s':>10}{'first token s':>15}{'first run s':>13}")
    for batch in args.batches:
        for name in (NEO, HF):
            if (name, batch) in results:
                r = results[(name, batch)]
                print(f"{name:<28}{batch:>6}{r['tps']:>10.1f}{r['ttft']:>15.3f}{r['first']:>13.1f}")
        if (HF, batch) in results:
            print(f"batch {batch}: neo / transformers = {results[NEO, batch]['tps'] / results[HF, batch]['tps']:.2f}x")


if __name__ == "__main__":
    main()

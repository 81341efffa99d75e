"""Generation throughput: neo's KV-cache decoder vs Hugging Face `generate`, same weights, same thread count.

A neo_125M-shaped model with random weights (converted to transformers with `neo.model.hf.to_hf`), a 128-token
prompt, 256 new tokens, greedy, at batch 1 and batch 8. Prints tokens/s (new tokens, after one warm-up run),
time to first token, and the first (compiling) run's time.

    python benchmarks/sample.py [--new 256] [--prompt 128] [--batches 1 8] [--skip-torch]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--skip-torch", action="store_true")
    args = parser.parse_args()

    from neo.config import compose
    from neo.model.decode import generate
    from neo.model.params import init_params

    cfg = compose(["model=neo_125M"]).model
    params = init_params(cfg, seed=0)
    rng = np.random.default_rng(0)
    print(f"{os.cpu_count()} cores; neo_125M shape, prompt {args.prompt}, {args.new} new tokens, greedy")
    print(f"{'implementation':<28}{'batch':>6}{'tokens/s':>10}{'first token s':>15}{'first run s':>13}")
    results = {}
    for batch in args.batches:
        prompts = [rng.integers(0, cfg.n_vocab, args.prompt).tolist() for _ in range(batch)]
        start = time.perf_counter()
        generate(cfg, params, prompts, max_new_tokens=args.new, temperature=0.0)
        first_run = time.perf_counter() - start
        generate(cfg, params, prompts, max_new_tokens=1, temperature=0.0)  # compiles this cache-length bucket
        start = time.perf_counter()
        generate(cfg, params, prompts, max_new_tokens=1, temperature=0.0)
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        out = generate(cfg, params, prompts, max_new_tokens=args.new, temperature=0.0)
        tps = sum(map(len, out)) / (time.perf_counter() - start)
        results[("neo", batch)] = tps
        print(f"{'neo (jax, KV cache)':<28}{batch:>6}{tps:>10.1f}{ttft:>15.3f}{first_run:>13.1f}")

    if args.skip_torch:
        return
    import torch
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    from neo.model.hf import to_hf

    torch.set_num_threads(os.cpu_count() or 1)
    hf_config, state = to_hf(cfg, params)
    model = GPTNeoForCausalLM(GPTNeoConfig(**hf_config)).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    for batch in args.batches:
        ids = torch.tensor(rng.integers(0, cfg.n_vocab, (batch, args.prompt)))
        kwargs = {"do_sample": False, "pad_token_id": 0, "attention_mask": torch.ones_like(ids)}
        with torch.no_grad():
            start = time.perf_counter()
            model.generate(ids, max_new_tokens=args.new, min_new_tokens=args.new, **kwargs)
            first_run = time.perf_counter() - start
            model.generate(ids, max_new_tokens=1, **kwargs)
            start = time.perf_counter()
            model.generate(ids, max_new_tokens=1, **kwargs)
            ttft = time.perf_counter() - start
            start = time.perf_counter()
            model.generate(ids, max_new_tokens=args.new, min_new_tokens=args.new, **kwargs)
            tps = batch * args.new / (time.perf_counter() - start)
        results[("torch", batch)] = tps
        print(f"{'transformers generate':<28}{batch:>6}{tps:>10.1f}{ttft:>15.3f}{first_run:>13.1f}")
    for batch in args.batches:
        print(f"batch {batch}: neo / transformers = {results[('neo', batch)] / results[('torch', batch)]:.2f}x")


if __name__ == "__main__":
    main()

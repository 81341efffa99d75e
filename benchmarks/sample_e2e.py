"""`neo sample` as a whole process against a whole Python process calling transformers `generate`, same weights.

A neo_125M-shaped model with random weights is written once as a Hugging Face GPT-Neo directory (safetensors and a
byte-level BPE tokenizer trained on the embedded corpus) and converted with `neo convert from-hf`. Then, alternating
the two in each round: the time to the first new token (`--max-new-tokens 1`) and to 256 new tokens, greedy, batch 1,
the end of the text not stopped at EOS, each a fresh process, the wall time from launch to exit. neo's persistent
compilation cache and its decoding-layout cache (`neo.infer.decoding_cache`) are warmed by one untimed run first:
what a user has after the first `neo sample` of a checkpoint. Both decode the same prompt to the same number of
tokens (checked). `--weights float32,int8` also runs `neo sample --weights int8` (and so on) in each round. The
decoding rate of each command is its extra tokens over its extra wall time (256-token run less 1-token run, per
round): start-up, load and prefill cancel out.

    python benchmarks/sample_e2e.py [--rounds 3] [--new 256] [--workdir DIR] [--weights float32,bfloat16,int8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from as_installed import byte_compile_neo

PROMPT = (
    "The quick brown fox jumps over the lazy dog. In a shocking finding, scientists discovered a herd of unicorns "
    "living in a remote, previously unexplored valley in the Andes Mountains. Even more surprising to the "
    "researchers was the fact that the unicorns spoke perfect English."
)
HF_SCRIPT = """
import sys, time
import torch
from transformers import GPTNeoForCausalLM, PreTrainedTokenizerFast
hf_dir, new, prompt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.set_num_threads({threads})
tok = PreTrainedTokenizerFast(tokenizer_file=hf_dir + "/tokenizer.json")
model = GPTNeoForCausalLM.from_pretrained(hf_dir).eval()
ids = torch.tensor([tok.encode(prompt)])
beyond = list(range(len(tok), model.config.vocab_size))  # ids the tokenizer lacks: neo never emits them either
with torch.inference_mode():
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                         do_sample=False, eos_token_id=None, pad_token_id=0, suppress_tokens=beyond or None)
sys.stdout.write(prompt + tok.decode(out[0, ids.shape[1]:].tolist()))
"""


def make_model(workdir: Path) -> tuple[Path, Path]:
    """The HF directory and the neo run directory converted from it (made once per workdir)."""
    hf_dir, run_dir = workdir / "hf", workdir / "run"
    if (run_dir / "config.yaml").is_file():
        return hf_dir, run_dir
    import flax.linen as nn
    import torch
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    from neo.config import compose
    from neo.data.stdlib_corpus import write_corpus
    from neo.data.tokenizer import train_tokenizer
    from neo.model.hf import to_hf
    from neo.model.params import init_params

    cfg = compose(["model=neo_125M"]).model
    train_dir, _, _ = write_corpus(workdir / "corpus")
    train_tokenizer([train_dir], workdir / "tok", 8000)
    hf_config, state = to_hf(cfg, nn.meta.unbox(init_params(cfg, seed=0)))
    model = GPTNeoForCausalLM(GPTNeoConfig(**hf_config)).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    model.save_pretrained(hf_dir, safe_serialization=True)
    (hf_dir / "tokenizer.json").write_bytes((workdir / "tok" / "tokenizer.json").read_bytes())
    neo = str(Path(sys.executable).with_name("neo"))
    subprocess.run([neo, "convert", "from-hf", str(hf_dir), str(run_dir)], check=True, capture_output=True)
    return hf_dir, run_dir


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--workdir", help="keep the models here between runs (default: a fresh temp dir)")
    parser.add_argument("--weights", default="float32", help="neo sample --weights kinds to run, comma-separated")
    args = parser.parse_args()
    byte_compile_neo()
    kinds = args.weights.split(",")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="neo-sample-e2e-"))
    workdir.mkdir(parents=True, exist_ok=True)
    hf_dir, run_dir = make_model(workdir)
    neo = str(Path(sys.executable).with_name("neo"))
    script = HF_SCRIPT.format(threads=os.cpu_count())

    def neo_cmd(new: int, weights: str = "float32") -> list[str]:
        return [neo, "sample", str(run_dir), "--prompt", PROMPT, "--max-new-tokens", str(new), "--temperature", "0",
                "--no-stop-at-eos", "--weights", weights]  # fmt: skip

    def name_of(kind: str) -> str:
        return "neo" if kind == "float32" else f"neo --weights {kind}"

    def hf_cmd(new: int) -> list[str]:
        return [sys.executable, "-c", script, str(hf_dir), str(new), PROMPT]

    for new in (1, args.new):  # warm neo's compilation cache (and the OS file cache for both)
        for kind in kinds:
            timed(neo_cmd(new, kind))
        timed(hf_cmd(new))
    results: dict[tuple[str, int], list[float]] = {}
    for r in range(args.rounds):
        for new in (1, args.new):
            outputs = {}
            runs = [(name_of(kind), neo_cmd(new, kind)) for kind in kinds] + [("transformers", hf_cmd(new))]
            for name, cmd in runs:
                seconds, outputs[name] = timed(cmd)
                results.setdefault((name, new), []).append(seconds)
                print(f"round {r + 1}, {new} new token(s), {name}: {seconds:.2f} s", flush=True)
            for name, text in outputs.items():
                if text != outputs["transformers"]:
                    print(f"  note: the texts differ ({name} {len(text)} chars, transformers "
                          f"{len(outputs['transformers'])})")  # fmt: skip
    names = [name_of(kind) for kind in kinds] + ["transformers"]
    rates = {n: [(args.new - 1) / (b - a) for a, b in zip(results[(n, 1)], results[(n, args.new)], strict=True)]
             for n in names}  # fmt: skip
    for name in names:  # the decoding rate as the command delivers it: the extra tokens over the extra wall time
        each = ", ".join(f"{r:.1f}" for r in rates[name])
        ratio = statistics.median(rates[name]) / statistics.median(rates[names[0]])
        print(f"decoding {name}: median {statistics.median(rates[name]):.1f} tokens/s ({each}), "
              f"{ratio:.2f}x {names[0]}")  # fmt: skip
    for new in (1, args.new):
        hf_s = statistics.median(results[("transformers", new)])
        for kind in kinds:
            neo_s = statistics.median(results[(name_of(kind), new)])
            print(f"{new} new token(s): median {name_of(kind)} {neo_s:.2f} s, transformers {hf_s:.2f} s: "
                  f"{hf_s / neo_s:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()

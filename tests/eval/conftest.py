"""A tiny GPT-Neo (random weights, HF format and converted to a neo run) and small local lm-eval tasks.

Everything is made here, offline: a byte-level BPE tokenizer trained on generated text, a Hugging Face GPT-Neo with
random weights saved with that tokenizer, `neo convert from-hf` of it, and task YAMLs of each request kind
(multiple choice, loglikelihood, loglikelihood_rolling, generate_until) over JSON files in the same folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_DATASETS_OFFLINE"] = "1"  # nothing is fetched: tasks read the local files below
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "dog",
    "ran",
    "far",
    "away",
    "to",
    "home",
    "big",
    "small",
    "red",
    "blue",
    "sun",
    "moon",
]

TASKS = {
    "tiny_mc": """
task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {dir}/mc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
""",
    "tiny_cloze": """
task: tiny_cloze
dataset_path: json
dataset_kwargs:
  data_files:
    test: {dir}/cloze.jsonl
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{' ' + word}}}}"
metric_list:
  - metric: perplexity
  - metric: acc
""",
    "tiny_ppl": """
task: tiny_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: {dir}/ppl.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
""",
    "tiny_gen": """
task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {dir}/gen.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{target}}}}"
generation_kwargs:
  until: ["."]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
""",
    "tiny_missing": """
task: tiny_missing
dataset_path: json
dataset_kwargs:
  data_files:
    test: {dir}/no_such_file.jsonl
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{word}}}}"
""",
}


def _sentence(rng: np.random.Generator, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi))))


def write_tasks(folder: Path, seed: int = 0, n: int = 12) -> Path:
    """The YAMLs of TASKS and their data (n documents each) in `folder`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "mc.jsonl": [
            {"question": _sentence(rng, 2, 9), "choices": [_sentence(rng, 1, 4) for _ in range(3)], "answer": i % 3}
            for i in range(n)
        ],
        "cloze.jsonl": [{"context": _sentence(rng, 3, 12), "word": str(rng.choice(WORDS))} for _ in range(n)],
        # some longer than n_ctx (64 tokens): several rolling windows
        "ppl.jsonl": [{"text": _sentence(rng, 4, 120) + "."} for _ in range(n)],
        "gen.jsonl": [{"prompt": _sentence(rng, 2, 10), "target": _sentence(rng, 1, 3)} for _ in range(n)],
    }
    for name, rows in files.items():
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name, text in TASKS.items():
        (folder / f"{name}.yaml").write_text(text.format(dir=folder))
    return folder


@dataclass(frozen=True)
class TinyModel:
    hf_dir: Path  # Hugging Face GPT-Neo directory (AutoModelForCausalLM / AutoTokenizer load it)
    run_dir: Path  # the same model after `neo convert from-hf`
    tasks: Path  # a folder of task YAMLs and their data


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    import torch
    import transformers

    from neo.cli.app import run
    from neo.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("harness")
    text = root / "text"
    text.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        (text / f"{i}.txt").write_text(_sentence(rng, 20, 60) + ".")
    tok = train_tokenizer([text], root / "tok", 300, min_frequency=1)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_file=tok.path, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    torch.manual_seed(0)
    config = transformers.GPTNeoConfig(
        vocab_size=len(fast),
        max_position_embeddings=64,
        hidden_size=32,
        num_heads=4,
        num_layers=2,
        attention_types=[[["global", "local"], 1]],
        window_size=8,
        bos_token_id=fast.eos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    model = transformers.GPTNeoForCausalLM(config).eval()
    with torch.no_grad():  # random, larger weights than HF's init: predictions differ clearly between tokens
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf_dir = root / "hf"
    model.save_pretrained(hf_dir, safe_serialization=True)
    fast.save_pretrained(hf_dir)
    run_dir = root / "run"
    assert run(["convert", "from-hf", str(hf_dir), str(run_dir)]) == 0
    return TinyModel(hf_dir=hf_dir, run_dir=run_dir, tasks=write_tasks(root / "tasks"))

"""`neo quickstart`: the whole path, end to end, on the embedded corpus — no network, no data to fetch.

It runs exactly what a user would run by hand — `tokenizer train`, `data encode`, `train`, `sample` — on the
docstrings of the Python standard library (see neo/data/stdlib_corpus.py), with a model small enough to learn
visibly on a laptop CPU in a few minutes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import typer

from neo.cli.common import err, out
from neo.cli.loss_plot import read_losses, read_rows, render_loss_plot

VOCAB_SIZE = 8192
PROMPT = "Return the"
SAMPLING = {"temperature": 0.7, "top_k": 40, "seed": 0}
WORD = re.compile(r"[A-Za-z]+")
# The model and run the quickstart trains: the tiny preset, a little wider, on the tokenizer's vocabulary. The large
# vocabulary (~4 bytes a token) lets each step see more text; the recipe is the best of those compared in
# benchmarks/README.md (quickstart) at ~3 minutes of training on 2 cores.
TRAIN_OVERRIDES = [
    "model=tiny",
    f"model.n_vocab={VOCAB_SIZE}",
    "model.n_embd=128",
    "model.n_head=4",
    "model.n_layer=4",
    'model.attention_types=[[["global","local"],2]]',
    "train.steps=800",
    "data.mode=documents_random",
    "data.stitch=4",
    "train.batch_size=16",
    "train.log_every=10",
    "train.checkpoint_every=200",
    "train.eval_steps=8",
    "optimizer.lr=2e-3",
    "optimizer.warmup_steps=30",
    "optimizer.weight_decay=0.1",
]


def quickstart_command(
    workdir: Path = typer.Option(Path("neo_quickstart"), "--workdir", help="Where corpus, data and run are written."),
    steps: int = typer.Option(800, "--steps", min=1, help="Training steps."),
) -> None:
    """Tokenizer, dataset, training and a sample, end to end on an embedded corpus (a few minutes on a CPU).

    Example: neo quickstart --workdir /tmp/neo_quickstart
    """
    from neo.cli.train import run_with_progress
    from neo.config import compose
    from neo.data.encode import encode_dataset
    from neo.data.stdlib_corpus import write_corpus
    from neo.data.tokenizer import train_tokenizer
    from neo.infer.sampling import load_for_sampling, sample_texts

    started = time.perf_counter()
    workdir = workdir.absolute()
    corpus, tok_dir, data_dir, eval_dir, run_dir = (
        workdir / "corpus",
        workdir / "tokenizer",
        workdir / "data" / "train",
        workdir / "data" / "eval",
        workdir / "run",
    )
    err.print(f"[bold]1/5[/] corpus: Python standard-library docstrings → {corpus}")
    train_txt, eval_txt, n_docs = write_corpus(corpus)
    err.print(f"     {n_docs} documents")

    err.print(f"[bold]2/5[/] tokenizer: byte-level BPE, {VOCAB_SIZE} tokens → {tok_dir}")
    tok = train_tokenizer([train_txt], tok_dir, VOCAB_SIZE, force=True)

    err.print(f"[bold]3/5[/] encode: TFRecords → {data_dir.parent}")
    for src, dst, name in ((train_txt, data_dir, "train"), (eval_txt, eval_dir, "eval")):
        card = encode_dataset([src], dst, tok.path, mode="documents", name=name, force=True)
        err.print(f"     {name}: {card.documents} documents, {card.tokens:,} tokens, {card.records} records")

    err.print(f"[bold]4/5[/] train → {run_dir}")
    overrides = [
        *TRAIN_OVERRIDES,
        f"train.steps={steps}",
        f"data.dir={data_dir}",
        f"data.eval_dir={eval_dir}",
        f"train.run_dir={run_dir}",
    ]
    cfg = compose(overrides)
    run_with_progress(cfg, run_dir)

    err.print(f"[bold]5/5[/] sample from {run_dir}")
    loaded = load_for_sampling(run_dir)
    continuations = sample_texts(loaded, [PROMPT] * 2, max_new_tokens=48, **SAMPLING)
    _print_summary(run_dir)
    out.print(f"samples (temperature {SAMPLING['temperature']}, top-k {SAMPLING['top_k']}, 48 new tokens):")
    for text in continuations:
        out.print("\n".join(f"  │ {line}" for line in (PROMPT + text).splitlines()), markup=False)
    known = corpus_word_share(continuations, train_txt)
    out.print(f"{known:.0%} of the sampled words (prompt excluded) occur in the training corpus")
    out.print(f"done in {time.perf_counter() - started:.0f} s; run directory: {run_dir}")
    out.print(f'next: neo sample {run_dir} --prompt "{PROMPT}" --temperature 0.7 --top-k 40')
    out.print(f"      tensorboard --logdir {run_dir / 'tensorboard'}   (loss, learning rate, tokens/s, MFU)")


def corpus_word_share(samples: list[str], corpus_dir: Path) -> float:
    """The share of the words (runs of letters) in `samples` that occur somewhere in the corpus's .txt files."""
    words = [w for text in samples for w in WORD.findall(text)]
    vocabulary = {w for path in corpus_dir.glob("*.txt") for w in WORD.findall(path.read_text(encoding="utf-8"))}
    return sum(w in vocabulary for w in words) / max(1, len(words))


def _print_summary(run_dir: Path) -> None:
    """The held-out loss and bits per byte at the first and last evaluation, and the training loss curve."""
    metrics = run_dir / "metrics.jsonl"
    evals = [row for row in read_rows(metrics) if "eval_loss" in row]
    first, last = evals[0], evals[-1]
    out.print(
        f"eval loss: step {first['step']} {first['eval_loss']:.3f} → step {last['step']} {last['eval_loss']:.3f} "
        f"({first['eval_bpb']:.2f} → {last['eval_bpb']:.2f} bits/byte on held-out text)"
    )
    out.print("training loss:")
    out.print(render_loss_plot(read_losses(metrics)))


def register(app: typer.Typer) -> None:
    app.command(
        "quickstart", short_help="Run the whole path (tokenizer, data, train, sample) on an embedded corpus, offline."
    )(quickstart_command)

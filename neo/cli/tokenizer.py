"""`neo tokenizer train`: glue around `neo.data.tokenizer.train_tokenizer`."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from neo.cli.common import err as err_console
from neo.cli.common import out as out_console

sub = typer.Typer(no_args_is_help=True, help="Train a byte-level BPE tokenizer.")


@sub.command("train")
def train(
    inputs: Annotated[list[str], typer.Argument(help="Files, directories (searched recursively) or globs.")],
    out: Annotated[str, typer.Option("--out", help="Directory to write tokenizer.json into (local or gs://...).")],
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="Vocabulary size, special tokens included.")],
    min_frequency: Annotated[int, typer.Option("--min-frequency", help="Minimum pair count to merge.")] = 2,
    nfkc: Annotated[bool, typer.Option("--nfkc", help="Apply NFKC Unicode normalisation.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty --out directory.")] = False,
) -> None:
    """Train byte-level BPE (with <|endoftext|> and <|padding|>) on .txt and lm_dataformat files.

    Example: neo tokenizer train corpus/ 'extra/*.jsonl.zst' --out tok/ --vocab-size 32000
    """
    from neo.data.tokenizer import train_tokenizer

    start = time.perf_counter()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("reading documents", total=None)

        def report(docs: int, chars: int) -> None:
            rate = docs / max(time.perf_counter() - start, 1e-9)
            bar.update(task, description=f"{docs:,} documents, {chars / 1e6:,.1f}M chars ({rate:,.0f} docs/s)")

        summary = train_tokenizer(
            inputs, out, vocab_size, min_frequency=min_frequency, nfkc=nfkc, force=force, progress=report
        )
    for path, reason in summary.skipped:
        err_console.print(f"[yellow]skipped[/] {path}: {reason}", highlight=False)
    out_console.print(
        f"wrote {summary.path}: vocab {summary.vocab_size}, eos id {summary.eos_id}, pad id {summary.pad_id}, "
        f"{summary.documents:,} documents from {summary.files - len(summary.skipped)} files "
        f"({len(summary.skipped)} skipped)",
        highlight=False,
        soft_wrap=True,  # one line per result, whatever the terminal width: scripts parse it
    )


def register(app: typer.Typer) -> None:
    app.add_typer(sub, name="tokenizer", help="Train a byte-level BPE tokenizer on raw text.")

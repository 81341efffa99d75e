"""`neo data encode` and `neo data peek`: glue around `neo.data.encode` and `neo.data.peek`."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from neo.cli.common import err as err_console
from neo.cli.common import out as out_console
from neo.errors import DataError

sub = typer.Typer(no_args_is_help=True, help="Encode text into TFRecords and inspect encoded datasets.")


@sub.command("encode")
def encode(
    inputs: Annotated[list[str], typer.Argument(help="Files, directories (searched recursively) or globs.")],
    out: Annotated[str, typer.Option("--out", help="Dataset directory to write (local or gs://bucket/...).")],
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="tokenizer.json, a directory holding one, or gpt2.")],
    mode: Annotated[str, typer.Option("--mode", help="documents: one record per document; chunks: fixed slices.")] = (
        "documents"
    ),
    name: Annotated[str, typer.Option("--name", help="Shard file-name prefix.")] = "data",
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="chunks mode: records hold N+1 tokens.")] = 2048,
    separator: Annotated[
        list[int] | None, typer.Option("--separator", help="Token id(s) after each document (default: EOS).")
    ] = None,
    minimum_size: Annotated[
        int, typer.Option("--minimum-size", help="Drop documents (documents mode) or a final chunk under N tokens.")
    ] = 1,
    files_per: Annotated[int, typer.Option("--files-per", help="Input documents per output shard.")] = 10_000,
    workers: Annotated[int, typer.Option("--workers", help="Tokenizer processes (1: in-process, all cores).")] = 1,
    force: Annotated[bool, typer.Option("--force", help="Replace a different dataset in --out.")] = False,
) -> None:
    """Tokenize a corpus into TFRecord shards plus DIR/dataset.yaml; re-running resumes an interrupted encode.

    Example: neo data encode corpus/ --out data/train --tokenizer tok/tokenizer.json --mode chunks --chunk-size 2048
    """
    from neo.data.encode import EncodeProgress, encode_dataset

    start = time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} files"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("encoding", total=None)

        def report(p: EncodeProgress) -> None:
            dt = max(time.perf_counter() - start, 1e-9)
            bar.update(
                task,
                total=p.files_total,
                completed=max(p.files_done - 1, 0),
                description=f"{p.documents:,} docs ({p.documents / dt:,.0f}/s), {p.tokens:,} tokens "
                f"({p.tokens / dt:,.0f}/s), {p.shards_done} shards",
            )

        card = encode_dataset(
            inputs,
            out,
            tokenizer,
            mode=mode,
            name=name,
            chunk_size=chunk_size,
            separator=separator or None,
            minimum_size=minimum_size,
            files_per=files_per,
            workers=workers,
            force=force,
            progress=report,
        )
    for item in card.skipped:
        err_console.print(f"[yellow]skipped[/] {item['reason']}", highlight=False)
    elapsed = time.perf_counter() - start
    out_console.print(
        f"wrote {out}/dataset.yaml: {card.records:,} records, {card.tokens:,} tokens, {card.documents:,} documents "
        f"in {len(card.shards)} shards ({card.mode} mode); dropped {card.dropped_tokens:,} tokens "
        f"({card.documents_dropped:,} documents); skipped {card.skipped_files} files; "
        f"{card.bytes_per_token:.2f} bytes/token; {card.tokens / max(elapsed, 1e-9):,.0f} tokens/s",
        highlight=False,
        soft_wrap=True,  # one line per result, whatever the terminal width: scripts parse it
    )


@sub.command("peek")
def peek(
    directory: Annotated[str, typer.Argument(help="A dataset directory written by `neo data encode` (or gs://...).")],
    tokenizer: Annotated[
        str | None, typer.Option("--tokenizer", help="Decode with this tokenizer (default: the dataset's).")
    ] = None,
    n_vocab: Annotated[
        int | None, typer.Option("--n-vocab", help="The model's vocabulary size (default: the card's).")
    ] = None,
    samples: Annotated[int, typer.Option("--samples", help="Decoded records to show.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")] = False,
) -> None:
    """Read every record: counts, length histogram, id range (checked against the vocabulary), decoded samples.

    Example: neo data peek data/train --n-vocab 50257 --samples 2
    """
    from neo.data.peek import peek_dataset

    with err_console.status("reading records") as status:
        report = peek_dataset(
            directory,
            tokenizer=tokenizer,
            n_vocab=n_vocab,
            samples=samples,
            progress=lambda done, total: status.update(f"reading records {done:,}/{total:,}"),
        )
    if as_json:
        print(json.dumps(report.to_dict()))
    else:
        table = Table(title=f"{report.directory} ({report.name}, {report.mode} mode)", show_header=False)
        for key, value in (
            ("shards", f"{report.shards:,}"),
            ("records", f"{report.records:,}"),
            ("documents", f"{report.documents:,}"),
            ("tokens", f"{report.tokens:,}"),
            ("record length", f"min {report.min_length:,}, mean {report.mean_length:,}, max {report.max_length:,}"),
            ("token ids", f"min {report.min_id}, max {report.max_id} (vocabulary {report.n_vocab:,})"),
            ("bytes/token", f"{report.bytes_per_token:.3f}"),
            ("dropped tokens", f"{report.dropped_tokens:,}"),
            ("skipped files", f"{report.skipped_files:,}"),
        ):
            table.add_row(key, value)
        out_console.print(table)
        hist = Table(title="record lengths", show_header=True)
        hist.add_column("tokens")
        hist.add_column("records", justify="right")
        for low, high, count in report.histogram:
            hist.add_row(f"{low}–{high - 1}", f"{count:,}")
        out_console.print(hist)
        for i, text in enumerate(report.samples):
            out_console.rule(f"sample {i}")
            out_console.print(text, markup=False, highlight=False)
    if not report.ok:
        raise DataError(f"{report.directory}: " + "; ".join(report.problems))


def register(app: typer.Typer) -> None:
    app.add_typer(sub, name="data", help="Encode text into TFRecords and inspect encoded datasets.")

"""`neo eval`: evaluate a run's latest checkpoint on its held-out data."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from neo.cli.common import out


def eval_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by neo train."),
    overrides: list[str] = typer.Argument(None, help="Overrides, e.g. data.eval_dir=DIR train.eval_steps=50"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Eval loss, perplexity and bits per byte of the latest checkpoint.

    Example: neo eval runs/tiny data.eval_dir=data/heldout train.eval_steps=20
    """
    from neo.train.loop import evaluate_run

    row = evaluate_run(run_dir, overrides or [])
    if as_json:
        out.print(json.dumps(row))
        return
    bpb = f", bits/byte {row['eval_bpb']:.4f}" if "eval_bpb" in row else ""
    out.print(f"step {row['step']}: eval loss {row['eval_loss']:.4f}, perplexity {row['eval_ppl']:.2f}{bpb}")


def register(app: typer.Typer) -> None:
    app.command("eval", short_help="Evaluate a run on held-out data.")(eval_command)

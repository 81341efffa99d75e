"""`neo eval`: evaluate a run's latest checkpoint on its held-out data."""

from __future__ import annotations

import json

import typer

from neo.cli.common import out


def eval_command(
    run_dir: str = typer.Argument(..., help="A run directory written by neo train (local or gs://...)."),
    overrides: list[str] = typer.Argument(None, help="Overrides, e.g. data.eval_dir=DIR train.eval_steps=50"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    task: str = typer.Option(None, "--task", help="A task instead of the eval data: lambada."),
    path: str = typer.Option(None, "--path", help="The task's data file (lambada: .jsonl with 'text'; or gs://...)."),
) -> None:
    """Eval loss, perplexity and bits per byte of the latest checkpoint, or a task's score.

    Example: neo eval runs/tiny data.eval_dir=data/heldout train.eval_steps=20
    Example: neo eval runs/tiny --task lambada --path lambada_test.jsonl
    """
    from neo.errors import DataError

    if task is not None:
        if task != "lambada" or path is None:
            raise DataError("tasks: --task lambada --path FILE.jsonl (a local LAMBADA file; nothing is downloaded)")
        from neo.eval.lambada import lambada
        from neo.infer.sampling import load_for_sampling

        loaded = load_for_sampling(run_dir)
        row = lambada(loaded.model, loaded.params, loaded.tokenizer, path)
        out.print(
            json.dumps(row)
            if as_json
            else f"LAMBADA: accuracy {row['lambada_acc']:.2%}, "
            f"perplexity {row['lambada_ppl']:.2f} over {row['lambada_examples']} passages"
        )
        return
    from neo.train.loop import evaluate_run

    row = evaluate_run(run_dir, overrides or [])
    if as_json:
        out.print(json.dumps(row))
        return
    bpb = f", bits/byte {row['eval_bpb']:.4f}" if "eval_bpb" in row else ""
    out.print(f"step {row['step']}: eval loss {row['eval_loss']:.4f}, perplexity {row['eval_ppl']:.2f}{bpb}")


def register(app: typer.Typer) -> None:
    app.command("eval", short_help="Evaluate a run on held-out data.")(eval_command)

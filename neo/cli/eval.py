"""`neo eval`: evaluate a run's latest checkpoint on its held-out data."""

from __future__ import annotations

import json

import typer

from neo.cli.common import err, out


def eval_command(
    run_dir: str = typer.Argument(..., help="A run directory written by neo train (local or gs://...)."),
    overrides: list[str] = typer.Argument(None, help="Overrides, e.g. data.eval_dir=DIR train.eval_steps=50"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    task: str = typer.Option(None, "--task", help="A task instead of the eval data: lambada."),
    path: str = typer.Option(None, "--path", help="The task's data file (lambada: .jsonl with 'text'; or gs://...)."),
    tasks: str = typer.Option(
        None, "--tasks", help="lm-evaluation-harness tasks, comma-separated (e.g. lambada_openai,hellaswag)."
    ),
    include_path: str = typer.Option(None, "--include-path", help="A folder of custom lm-eval task YAMLs."),
    limit: float = typer.Option(
        None, "--limit", min=0.0, help="With --tasks: the first N documents per task (a fraction if below 1)."
    ),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="With --tasks: rows per forward pass."),
    num_fewshot: int = typer.Option(None, "--num-fewshot", min=0, help="With --tasks: few-shot examples per prompt."),
    mesh: str = typer.Option(
        None, "--mesh", help="With --tasks: 'run' (the run's mesh) or a shape such as x:2,y:4 (default one device)."
    ),
    layout: str = typer.Option(None, "--layout", help="With --tasks and --mesh SHAPE: the layout, e.g. heads:y."),
    seed: int = typer.Option(0, "--seed", help="With --tasks: few-shot sampling and sampled generation."),
) -> None:
    """Eval loss, perplexity and bits per byte of the latest checkpoint, or a task's score.

    With --tasks, the tasks run through EleutherAI's lm-evaluation-harness on neo's batched forward pass and
    KV-cache decoder; each task's metrics are printed, and written to RUN_DIR/eval/harness-*.json and TensorBoard.

    Example: neo eval runs/tiny data.eval_dir=data/heldout train.eval_steps=20
    Example: neo eval runs/tiny --task lambada --path lambada_test.jsonl
    Example: neo eval runs/tiny --tasks lambada_openai,hellaswag --limit 100
    Example: neo eval runs/tiny --tasks my_task --include-path my_tasks/
    """
    from neo.errors import DataError

    if tasks is not None:
        if task is not None or overrides:
            raise DataError("--tasks runs lm-eval tasks: pass it without --task and without config overrides")
        _harness(run_dir, tasks, include_path, limit, batch_size, num_fewshot, mesh, layout, seed, as_json)
        return
    if include_path is not None or limit is not None:
        raise DataError("--include-path and --limit go with --tasks (lm-eval tasks); pass --tasks too")
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


def _harness(
    run_dir: str,
    tasks: str,
    include_path: str | None,
    limit: float | None,
    batch_size: int,
    num_fewshot: int | None,
    mesh: str | None,
    layout: str | None,
    seed: int,
    as_json: bool,
) -> None:
    """`neo eval RUN --tasks ...`: print one line per task and metric (value and standard error)."""
    try:
        from neo.eval.tasks import run_tasks
    except ImportError as exc:
        from neo.errors import ConfigError

        raise ConfigError(
            f"--tasks needs lm-evaluation-harness ({exc.name} is missing): pip install 'neo[eval]'"
        ) from None
    scores = run_tasks(
        run_dir,
        tasks,
        include_path=include_path,
        limit=int(limit) if limit is not None and limit >= 1 else limit,
        batch_size=batch_size,
        num_fewshot=num_fewshot,
        mesh=mesh,
        layout=layout,
        seed=seed,
    )
    if as_json:
        out.print(json.dumps({"rows": scores.rows, "path": scores.path}))
        return
    for row in scores.rows:
        stderr = f" ± {row['stderr']:.4f}" if row["stderr"] is not None else ""
        out.print(f"{row['task']}: {row['metric']} {row['value']:.4f}{stderr}")
    err.print(f"wrote {scores.path}")


def register(app: typer.Typer) -> None:
    app.command("eval", short_help="Evaluate a run: held-out loss, or lm-evaluation-harness tasks.")(eval_command)

"""`neo train`: sharded training of a composed config into a run directory (resumes an existing one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import TextColumn

from neo.cli.common import err, out, progress

if TYPE_CHECKING:
    from neo.config import NeoConfig
    from neo.train.loop import TrainResult


def train_command(
    overrides: list[str] = typer.Argument(None, help="Hydra overrides: model=, mesh=, data.dir=, train.steps=, ..."),
    run_dir: str = typer.Option(
        None,
        "--run-dir",
        help="Run directory, local or gs://bucket/... (default: train.run_dir). Resumes if it exists.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Compile the train step only; report per-device memory."),
    coordinator: str = typer.Option(None, "--coordinator", help="Multi-host: host:port of process 0."),
    num_processes: int = typer.Option(None, "--num-processes", help="Multi-host: number of processes."),
    process_id: int = typer.Option(None, "--process-id", help="Multi-host: this process's index."),
) -> None:
    """Train a model, or resume the run in RUN_DIR.

    Example: neo train model=tiny data.dir=data/mycorpus train.steps=200 --run-dir runs/tiny
    """
    from neo.config import compose
    from neo.parallel.distributed import initialize

    initialize(coordinator, num_processes, process_id)  # before any JAX work; a no-op for one process
    overrides = list(overrides or [])
    if dry_run:
        from neo.cli.layout import prepare_devices

        prepare_devices(overrides)
    if run_dir is not None:
        overrides.append(f"train.run_dir={run_dir}")
    cfg = compose(overrides)
    if not dry_run:
        from neo.train.loop import inherit_run_model
        from neo.train.vocab import fit_vocab, pinned_vocab

        cfg, inherited = inherit_run_model(cfg, cfg.train.run_dir, overrides)
        if inherited:
            err.print(f"[dim]model: the run's own ({cfg.train.run_dir}/config.yaml)[/]")
        cfg, note = fit_vocab(cfg, pinned_vocab(overrides) or inherited)
        if note:
            err.print(f"[dim]{note}[/]")
    if dry_run:
        from neo.train.dry_run import dry_run as do_dry_run

        report = do_dry_run(cfg)
        out.print(report.summary())
        return
    import jax

    if jax.process_index() != 0:  # one progress line per job, from process 0
        from neo.train.loop import train

        train(cfg, cfg.train.run_dir)
        return
    result = run_with_progress(cfg, cfg.train.run_dir)
    out.print(f"run {result.run_dir}: steps {result.start_step} → {result.final_step}")
    from neo.train.precision_hint import hint_for_this_machine

    hint = None if inherited or result.stopped_by_signal else hint_for_this_machine(cfg, overrides)  # after the run
    if hint:
        err.print(f"[dim]{hint}[/]")
    if result.stopped_by_signal:
        import signal

        name = signal.Signals(result.stopped_by_signal).name
        err.print(f"[yellow]stopped at step {result.final_step} by {name}; checkpoint saved — rerun to resume[/]")
        if result.stopped_by_signal == signal.SIGINT:
            raise typer.Exit(130)  # the shell's code for Ctrl-C; SIGTERM (preemption) stays a clean exit


def run_with_progress(cfg: NeoConfig, run_dir: str) -> TrainResult:
    """Run `neo.train.loop.train` with a live rich progress line (step, loss, tokens/s, MFU, ETA)."""
    from neo.train.loop import Hooks, train

    bar = progress(
        TextColumn("loss [cyan]{task.fields[loss]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TextColumn("MFU {task.fields[mfu]}"),
    )
    task_id = None

    def on_start(info: dict) -> None:
        nonlocal task_id
        err.print(
            f"{info['n_params']:,} parameters on {info['devices']} device(s), mesh {info['mesh']}, "
            f"{info['tokens_per_step']:,} tokens/step, starting at step {info['start_step']}"
        )
        task_id = bar.add_task("train", total=info["steps"], completed=info["start_step"], loss="-", tps="-", mfu="-")

    def on_advance(step: int) -> None:
        bar.update(task_id, completed=step)

    def on_step(row: dict) -> None:
        aux = f" (aux {row['aux_loss']:.4f})" if row.get("aux_loss") else ""
        bar.update(
            task_id,
            loss=f"{row['loss']:.4f}{aux}",
            tps=f"{row['tokens_per_sec']:,.0f}",
            mfu=f"{row['mfu']:.1%}",
        )

    def on_eval(row: dict) -> None:
        extra = f", bits/byte {row['eval_bpb']:.3f}" if "eval_bpb" in row else ""
        bar.console.print(f"step {row['step']}: eval loss {row['eval_loss']:.4f}, ppl {row['eval_ppl']:.2f}{extra}")

    def on_checkpoint(info: dict) -> None:
        bar.console.print(f"step {info['step']}: checkpoint saved")

    def on_warning(message: str) -> None:
        bar.console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)

    with bar:
        return train(
            cfg,
            run_dir,
            Hooks(
                on_start=on_start,
                on_step=on_step,
                on_advance=on_advance,
                on_eval=on_eval,
                on_checkpoint=on_checkpoint,
                on_warning=on_warning,
            ),
        )


def register(app: typer.Typer) -> None:
    app.command("train", short_help="Train (or resume) a model into a run directory.")(train_command)

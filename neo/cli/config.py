"""`neo config show`: print the composed, validated config."""

from __future__ import annotations

import typer

from neo.cli.common import out

config_app = typer.Typer(help="Inspect the composed Hydra configuration.", no_args_is_help=True)


@config_app.command("show")
def show(
    overrides: list[str] = typer.Argument(None, help="Hydra overrides, e.g. model=neo_1.3B train.steps=10"),
) -> None:
    """Print the config that `neo train` would run with, and the model's parameter count.

    Example: neo config show model=neo_1.3B mesh=v3-8 optimizer=adafactor train.batch_size=64
    """
    from neo.config import compose, to_yaml
    from neo.model.params import count_params

    cfg = compose(overrides or [])
    out.print(to_yaml(cfg), end="")
    out.print(f"# model parameters: {count_params(cfg.model):,}")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config", help="Show the composed configuration (model, mesh, data, optimizer).")

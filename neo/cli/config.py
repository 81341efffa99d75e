"""`neo config show`: print the composed, validated config; `neo config import`: GPT-Neo JSON -> neo overrides."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from neo.cli.common import err, out

config_app = typer.Typer(
    help="Inspect the composed Hydra configuration; import GPT-Neo's JSON configs.", no_args_is_help=True
)


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


@config_app.command("import")
def import_(
    config: str = typer.Argument(..., help="An original GPT-Neo config: configs/*.json (a local path or gs://...)"),
    write: Path = typer.Option(None, "--write", help="Also write them as a model preset YAML (for neo/conf/model/)."),
) -> None:
    """Print the neo overrides equivalent to a GPT-Neo config, one per line; keys with no neo equivalent go to stderr.

    Example: neo config import configs/gpt3_XL_256_Pile.json | xargs neo config show
    """
    from neo.config_import import import_file

    imported = import_file(config)
    if write is not None:
        write.parent.mkdir(parents=True, exist_ok=True)
        write.write_text(imported.preset_yaml(config))
    for override in imported.overrides():
        out.print(shlex.quote(override), markup=False)
    for item in imported.unmapped:
        err.print(f"not mapped: {item.key} — {item.reason}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config", help="Show the composed configuration; import a GPT-Neo JSON config.")

"""`neo convert`: Hugging Face GPT-Neo directories <-> neo run directories."""

from __future__ import annotations

import typer

from neo.cli.common import out

convert_app = typer.Typer(
    help="Convert checkpoints: Hugging Face GPT-Neo <-> neo, and original GPT-Neo (mesh-tf) -> neo.",
    no_args_is_help=True,
)


@convert_app.command("from-hf")
def from_hf(
    hf_dir: str = typer.Argument(
        ...,
        help="A HF GPT-Neo directory (or gs://...): config.json, model.safetensors; or a hub id such as "
        "EleutherAI/gpt-neo-125M, taken from the local Hugging Face cache (downloaded when online, unless "
        "HF_HUB_OFFLINE=1).",
    ),
    run_dir: str = typer.Argument(..., help="The neo run directory to create (local or gs://...)."),
) -> None:
    """Make a neo run directory from a Hugging Face GPT-Neo model and its tokenizer (sample, eval, fine-tune it).

    Example: neo convert from-hf EleutherAI/gpt-neo-125M runs/neo125M
    """
    from neo.convert import from_hf_dir

    out.print(f"wrote {from_hf_dir(hf_dir, run_dir)}")


@convert_app.command("to-hf")
def to_hf(
    run_dir: str = typer.Argument(..., help="A neo run directory (local or gs://...)."),
    hf_dir: str = typer.Argument(..., help="The HF directory to create (local or gs://...)."),
    max_shard_size: str = typer.Option(
        "5GB", help="Split model.safetensors into shards of at most this size (e.g. 2GB, 500MB), with an index."
    ),
) -> None:
    """Export a run's latest parameters and tokenizer as a Hugging Face GPT-Neo model: AutoModelForCausalLM,
    AutoTokenizer and pipeline("text-generation") load it, and it stops where `neo sample` stops.

    Example: neo convert to-hf runs/small ./small-hf
    """
    from neo.convert import parse_size, to_hf_dir

    out.print(f"wrote {to_hf_dir(run_dir, hf_dir, parse_size(max_shard_size))}")


@convert_app.command("from-mtf")
def from_mtf(
    ckpt_prefix: str = typer.Argument(
        ..., help="A GPT-Neo (mesh-tensorflow) checkpoint prefix, e.g. model.ckpt-362000"
    ),
    config_json: str = typer.Argument(..., help="The GPT-Neo JSON config it was trained with."),
    run_dir: str = typer.Argument(..., help="The neo run directory to create (local or gs://...)."),
) -> None:
    """Bring a model trained with the original GPT-Neo into neo (Adam slots are ignored).

    Example: neo convert from-mtf gs-copy/model.ckpt-362000 configs/gpt3_XL.json runs/xl
    """
    from neo.convert import from_mtf_dir

    out.print(f"wrote {from_mtf_dir(ckpt_prefix, config_json, run_dir)}")


def register(app: typer.Typer) -> None:
    app.add_typer(
        convert_app,
        name="convert",
        help="Convert between neo run directories, Hugging Face GPT-Neo and GPT-Neo mesh-tf checkpoints.",
    )

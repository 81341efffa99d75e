"""`neo sample`: text generation from a run directory (or a Hugging Face GPT-Neo directory)."""

from __future__ import annotations

import sys

import typer

from neo.cli.common import err
from neo.errors import DataError


def sample_command(
    source: str = typer.Argument(
        ..., help="A run directory (neo train / neo convert) or a HF GPT-Neo dir; or gs://..."
    ),
    prompt: str = typer.Option(None, "--prompt", help="Prompt text."),
    prompt_file: str = typer.Option(None, "--prompt-file", help="Prompts, one per line (a file or gs://...)."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="0 = greedy."),
    top_k: int = typer.Option(0, "--top-k", min=0, help="Keep the k most likely tokens (0 = all)."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass (1 = off)."),
    seed: int = typer.Option(0, "--seed"),
    num_samples: int = typer.Option(1, "--num-samples", min=1),
    stop_at_eos: bool = typer.Option(True, "--stop-at-eos/--no-stop-at-eos"),
    mesh: str = typer.Option(
        None,
        "--mesh",
        help="Run sharded over the devices present: 'run' = the run's own mesh.shape and mesh.layout, or a mesh "
        "shape such as x:2,y:4. Default: one device.",
    ),
    layout: str = typer.Option(
        None,
        "--layout",
        help="With --mesh SHAPE: the layout, e.g. heads:y,mlp:y (default: the run's mesh.layout; empty = batch "
        "over every axis).",
    ),
    weights: str = typer.Option(
        "float32",
        "--weights",
        help="How dense weights and the embedding are held while decoding: float32, bfloat16, or int8 (weight-only, "
        "per-channel scales): 1/2 or 1/4 of the memory. With either of the last two the KV cache is bfloat16.",
    ),
) -> None:
    """Generate text. With --temperature 0 stdout is exactly the prompt followed by its greedy continuation.

    A model larger than one device samples sharded with --mesh: its parameters are restored straight into the
    layout's shardings and the KV cache is split by batch and heads, exactly as training lays the model out.

    Example: neo sample runs/tiny --prompt "The meaning of" --max-new-tokens 64 --temperature 0

    Example: neo sample runs/xl --prompt "Hello" --mesh x:1,y:8 --layout heads:y,mlp:y,vocab:y
    """
    import jax

    from neo.infer.sampling import load_for_sampling, mesh_for_sampling, sample_texts
    from neo.model.quantize import WEIGHT_DTYPES

    if weights not in WEIGHT_DTYPES:
        raise DataError(f"--weights {weights!r} is not one of: {', '.join(WEIGHT_DTYPES)}")
    prompts = [p for p in _prompts(prompt, prompt_file) for _ in range(num_samples)]
    loaded = load_for_sampling(source, *mesh_for_sampling(source, mesh, layout), decoding=True, weights=weights)
    if weights != "float32" and mesh is None and jax.default_backend() == "cpu":
        from neo.model import cpu_matvec

        if not cpu_matvec.ready():  # it warned why
            err.print(
                f"[yellow]note:[/] --weights {weights} holds the weights in less memory, but without neo's CPU kernel "
                "XLA widens them before each product: decoding is several times slower than float32 here"
            )
    stream = len(prompts) == 1  # one text streams to stdout as it is generated; several print when all are done
    if stream:
        _write(prompts[0])
    texts = sample_texts(
        loaded,
        prompts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        stop_at_eos=stop_at_eos,
        on_text=lambda index, piece: _write(piece) if stream else None,
        weights=weights,
    )
    if stream:
        if sys.stdout.isatty():
            _write("\n")  # for the terminal only: piped stdout stays exactly prompt + continuation
        return
    for i, (p, t) in enumerate(zip(prompts, texts, strict=True)):
        err.print(f"[dim]--- sample {i}[/]")
        _write(p + t + "\n")


def _prompts(prompt: str | None, prompt_file: str | None) -> list[str]:
    """The prompts: --prompt's text, or --prompt-file's non-empty lines."""
    if (prompt is None) == (prompt_file is None):
        raise DataError("pass exactly one of --prompt TEXT or --prompt-file FILE")
    if prompt_file is None:
        return [prompt]
    from neo import storage

    if not storage.isfile(prompt_file):
        raise DataError(f"--prompt-file {prompt_file} does not exist; pass a text file with one prompt per line")
    return [line for line in storage.read_text(prompt_file).splitlines() if line.strip()]


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("sample", short_help="Generate text from a trained model.")(sample_command)

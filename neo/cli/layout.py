"""`neo layout search`: find a sharding layout (and mesh shape) that fits, before launch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table

from neo.cli.common import err, out

if TYPE_CHECKING:
    from neo.train.dry_run import LayoutSearch

layout_app = typer.Typer(help="Find sharding layouts that fit the target devices.", no_args_is_help=True)
GiB = 1024**3


def prepare_devices(overrides: list[str]) -> None:
    """Simulate the preset's device count on CPU when the hardware is absent; must run before JAX starts."""
    from neo.config import compose
    from neo.parallel.targets import request_cpu_devices, uses_aot
    from neo.runtime import prepare_aot

    cfg = compose(overrides)
    if uses_aot(cfg.mesh):  # libtpu or the CUDA plugin bring their own (abstract) devices: none to simulate
        prepare_aot()
    elif cfg.mesh.devices > 1:
        request_cpu_devices(cfg.mesh.devices)


@layout_app.command("search")
def search_command(
    overrides: list[str] = typer.Argument(None, help="Hydra overrides: model=, mesh=, train.batch_size=, ..."),
    and_mesh_shape: bool = typer.Option(False, "--and-mesh-shape", help="Also search factorizations of the devices."),
    top: int = typer.Option(8, "--top", min=1, help="Rows to show."),
    exact: int = typer.Option(
        0, "--compile", min=0, help="Candidates to compile after the pre-screen, most data-parallel first (0 = all)."
    ),
    budget: float = typer.Option(
        50.0, "--budget", min=0.0, help="Seconds of compiling; the next compile starts only if it should fit."
    ),
    full: bool = typer.Option(
        False,
        "--full",
        help="Compile every candidate in full. By default TPU targets are screened: the compiler stops after buffer "
        "assignment (~3 s, not ~25 s, for model=xl) and only the leader is compiled in full.",
    ),
    write: str = typer.Option(None, "--write", help="Save the best layout as a mesh config YAML (a file or gs://...)."),
) -> None:
    """Rank layouts by per-device memory (from the compiler) and estimated step time.

    Example: neo layout search model=gpt3_xl mesh=v3-256 train.batch_size=512 --and-mesh-shape --write best.yaml
    """
    overrides = list(overrides or [])
    prepare_devices(overrides)
    from neo.config import compose
    from neo.errors import LayoutError
    from neo.train.dry_run import search_layouts

    cfg = compose(overrides)
    with err.status("compiling candidates...") as status:
        found = search_layouts(
            cfg,
            and_mesh_shape=and_mesh_shape,
            exact_top=exact or None,
            budget_s=budget,
            full=full,
            progress=lambda i, n, c, stage: status.update(f"{stage} {i + 1}/{n}: {c.shape} {c.layout}"),
        )
    out.print(results_table(found, cfg.mesh.name, top))
    compiled = [r for r in found.results if r.report is not None]
    for r in compiled:
        if r.screen_error is not None:
            err.print(
                f"screen check, {r.candidate.shape} {r.candidate.layout}: screened {r.screen_memory / GiB:.3f} GiB, "
                f"full compile {r.report.memory_bytes / GiB:.3f} GiB per device ({r.screen_error:+.1%})"
            )
    if any(r.skipped for r in found.results):
        err.print(
            f"candidates marked 'not compiled' passed the pre-screen; raise --budget {budget:g} (or --compile) "
            "to rank them too"
        )
    best = compiled[0] if compiled and compiled[0].fits and compiled[0].source == "compiled" else None
    if compiled and compiled[0].fits and best is None:
        raise LayoutError(
            f"the leading layout {compiled[0].candidate.layout} was only screened; raise --budget so that its full "
            "compile confirms it fits"
        )
    if best is None:
        raise LayoutError(
            f"no candidate layout fits this model on {cfg.mesh.name}; lower train.batch_size, set "
            "model.remat_policy=full, try --and-mesh-shape, or pick a larger mesh"
        )
    if write is not None:
        import dataclasses

        import yaml

        mesh = dataclasses.replace(cfg.mesh, shape=best.candidate.shape, layout=best.candidate.layout)
        from neo import storage

        storage.write_atomic(write, yaml.safe_dump(dataclasses.asdict(mesh), sort_keys=False))
        err.print(
            f"wrote {write}; train with it: neo train mesh={cfg.mesh.name} "
            f"mesh.shape={best.candidate.shape} mesh.layout={best.candidate.layout} ..."
        )


def results_table(found: LayoutSearch, mesh_name: str, top: int) -> Table:
    """Every candidate of a search, one row each: ranked ones first (at most `top`), then the rest with the reason."""
    from neo.train.dry_run import format_seconds

    compiled = [r for r in found.results if r.report is not None]
    screened = any(r.source == "screened" or r.screen_memory is not None for r in compiled)
    table = Table(
        title=f"{mesh_name}: {found.ranked} of {found.considered} candidates ranked",
        caption=f"memory: {found.compiler}"
        + (
            "; screened = the compiler's buffer assignment before code generation (which adds temporaries: the full"
            " compile needs more), compiled = the full program"
            if screened
            else ""
        )
        + "; est. step/MFU: roofline estimate from the FLOPs, bytes and collectives (≥ / ≤: the compiler counted no"
        " FLOPs or bytes, so the model's FLOPs at peak plus communication)",
    )
    for col in ("mesh.shape", "mesh.layout", "memory/device", "fits", "est. step", "est. MFU", "figures"):
        table.add_column(col, no_wrap=col not in ("mesh.layout", "figures"), overflow="fold")
    for r in compiled[:top]:
        bound = "" if r.report.cost_known else "≥ "
        table.add_row(
            r.candidate.shape,
            r.candidate.layout,
            f"> {r.report.memory_bytes / GiB:.2f} GiB" if r.error else f"{r.report.memory_bytes / GiB:.2f} GiB",
            "yes" if r.fits else "no",
            "-" if r.error else bound + format_seconds(r.step_time_s),
            ("≤ " if bound else "") + f"{r.mfu:.0%}",
            r.source + (f": {r.error}" if r.error else ""),
        )
    if len(compiled) > top:
        table.add_row("...", f"{len(compiled) - top} more ranked (raise --top)", "", "", "", "", "")
    for r in found.results:
        if r.report is None:
            status = "not compiled" if r.skipped else "rejected"
            table.add_row(r.candidate.shape, r.candidate.layout, "-", status, "-", "-", r.error or "")
    return table


def register(app: typer.Typer) -> None:
    app.add_typer(layout_app, name="layout", help="Search sharding layouts and mesh shapes that fit, before launch.")

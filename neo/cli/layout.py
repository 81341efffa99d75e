"""`neo layout search`: find a sharding layout (and mesh shape) that fits, before launch."""

from __future__ import annotations

import typer
from rich.table import Table

from neo.cli.common import err, out

layout_app = typer.Typer(help="Find sharding layouts that fit the target devices.", no_args_is_help=True)
GiB = 1024**3


def prepare_devices(overrides: list[str]) -> None:
    """Simulate the preset's device count on CPU when the hardware is absent; must run before JAX starts."""
    from neo.config import compose
    from neo.parallel.search import prepare_tpu_aot, request_cpu_devices, uses_tpu_aot

    cfg = compose(overrides)
    if uses_tpu_aot(cfg.mesh):  # libtpu brings its own (abstract) TPU devices: no CPU devices to simulate
        prepare_tpu_aot()
    elif cfg.mesh.devices > 1:
        request_cpu_devices(cfg.mesh.devices)


@layout_app.command("search")
def search_command(
    overrides: list[str] = typer.Argument(None, help="Hydra overrides: model=, mesh=, train.batch_size=, ..."),
    and_mesh_shape: bool = typer.Option(False, "--and-mesh-shape", help="Also search factorizations of the devices."),
    top: int = typer.Option(8, "--top", min=1, help="Rows to show."),
    exact: int = typer.Option(
        0,
        "--compile",
        min=0,
        help="Candidates to compile after the pre-screen (0 = 2 with the TPU compiler, ~25 s each; else 4).",
    ),
    budget: float = typer.Option(
        50.0, "--budget", min=0.0, help="Seconds of compiling; the next candidate starts only if it should fit."
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
    from neo.train.dry_run import format_seconds, search_layouts

    cfg = compose(overrides)
    if exact == 0:  # a TPU compile of a billion-parameter step takes ~25 s on 2 cores; a simulated-CPU one ~1 s
        from neo.parallel.search import uses_tpu_aot

        exact = 2 if uses_tpu_aot(cfg.mesh) else 4
    with err.status("compiling candidates...") as status:
        found = search_layouts(
            cfg,
            and_mesh_shape=and_mesh_shape,
            exact_top=exact,
            budget_s=budget,
            progress=lambda i, n, c: status.update(f"compiling {i + 1}/{n}: {c.shape} {c.layout}"),
        )
    table = Table(
        title=f"{cfg.mesh.name}: {found.compiled} of {found.screened} candidates compiled",
        caption=f"memory: {found.compiler}; est. step/MFU: roofline estimate from the compiled FLOPs, bytes and "
        "collectives (neo.parallel.search.estimate_step_time)",
    )
    for col in ("mesh.shape", "mesh.layout", "memory/device", "fits", "est. step", "est. MFU"):
        table.add_column(col, no_wrap=col != "mesh.layout", overflow="fold")
    compiled = [r for r in found.results if r.report is not None]
    for r in compiled[:top]:
        table.add_row(
            r.candidate.shape,
            r.candidate.layout,
            f"> {r.report.memory_bytes / GiB:.2f} GiB" if r.error else f"{r.report.memory_bytes / GiB:.2f} GiB",
            "yes" if r.fits else "no",
            "-" if r.error else format_seconds(r.step_time_s),
            f"{r.mfu:.0%}",
        )
    out.print(table)
    skipped = [r for r in found.results if r.skipped]
    if skipped:
        err.print(
            f"{len(skipped)} more candidates passed the pre-screen but were not compiled within --budget {budget:g} s, "
            f"e.g. {skipped[0].candidate.shape} {skipped[0].candidate.layout}; raise --budget to rank them too"
        )
    rejected = [r for r in found.results if r.report is None and not r.skipped]
    if rejected:
        err.print(
            f"{len(rejected)} candidates rejected before compiling, e.g. {rejected[0].candidate.layout}: "
            f"{rejected[0].error}"
        )
    best = compiled[0] if compiled and compiled[0].fits else None
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


def register(app: typer.Typer) -> None:
    app.add_typer(layout_app, name="layout", help="Search sharding layouts and mesh shapes that fit, before launch.")

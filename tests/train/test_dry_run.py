"""Compile-only checks before launch: `neo train --dry-run` and the layout search, on 8 simulated devices."""

from __future__ import annotations

import pytest

from neo.cli.app import run
from neo.config import compose
from neo.errors import LayoutError
from neo.train.dry_run import dry_run, search_layouts
from neo.train.session import build_session

SMALL = ["model=tiny", "model.n_vocab=512", "train.batch_size=16"]


def test_dry_run_reports_per_device_memory_and_sharding_shrinks_it() -> None:
    data_parallel = dry_run(compose([*SMALL, "mesh=cpu-8"]))
    assert data_parallel.devices == 8 and data_parallel.peak_bytes > data_parallel.argument_bytes > 0
    sharded = dry_run(
        compose([*SMALL, "mesh=cpu-8", "mesh.shape=x:2,y:4", "mesh.layout=batch:x,heads:y,mlp:y,vocab:y"])
    )
    assert sharded.argument_bytes < data_parallel.argument_bytes  # parameters and moments split 4 ways


def test_dry_run_on_a_tiny_memory_budget_says_it_does_not_fit() -> None:
    report = dry_run(compose([*SMALL, "mesh=cpu-8", "mesh.memory_per_device=1000"]))
    assert report.fits is False and "does NOT fit" in report.summary()


def test_a_wrong_layout_fails_at_start_with_one_line() -> None:
    with pytest.raises(LayoutError) as info:
        build_session(compose([*SMALL, "mesh=cpu-8", "mesh.shape=x:2,y:4", "mesh.layout=batch:x,heads:y,kv:y"]))
    assert "\n" not in str(info.value)
    bad_vocab = compose(["model=tiny", "model.n_vocab=510", "mesh=cpu-8", "mesh.shape=x:2,y:4", "mesh.layout=vocab:y"])
    with pytest.raises(LayoutError, match="not divisible"):
        build_session(bad_vocab)


def test_layout_search_ranks_fitting_candidates_first() -> None:
    found = search_layouts(compose([*SMALL, "mesh=cpu-8"]), and_mesh_shape=True, exact_top=3)
    compiled = [r for r in found.results if r.report is not None]
    assert found.compiled == len(compiled) == 3 and found.exact  # 8 real (host) CPU devices: cpu-8 exactly
    assert compiled[0].fits
    assert [r.step_time_s for r in compiled if r.fits] == sorted(r.step_time_s for r in compiled if r.fits)


def test_cli_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["train", "--dry-run", *SMALL, "mesh=cpu-8"]) == 0
    assert "per device" in capsys.readouterr().out

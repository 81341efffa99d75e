"""Compile-only checks before launch: `neo train --dry-run` and the layout search, on 8 simulated devices, and on
TPU pods through libtpu's ahead-of-time compiler when the `libtpu` wheel is installed."""

from __future__ import annotations

import importlib.util
import time

import jax
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


def test_loss_chunks_default_to_the_logits_budget_per_device() -> None:
    """train.loss_chunks=0 (auto) sizes the chunks from each device's rows; an explicit count is kept."""
    big_vocab = ["model=tiny", "model.n_vocab=16384", "model.n_ctx=64", "train.batch_size=16"]
    assert (
        build_session(compose(big_vocab), devices=jax.devices()[:1]).loss_chunks == 4
    )  # 16 x 64 x 16384 x 4 B = 64 MiB
    assert build_session(compose([*big_vocab, "mesh=cpu-8"])).loss_chunks == 1  # 2 rows per device: 8 MiB
    assert build_session(compose([*big_vocab, "train.loss_chunks=8"]), devices=jax.devices()[:1]).loss_chunks == 8


def test_layout_search_ranks_fitting_candidates_first_and_accounts_for_every_candidate() -> None:
    from neo.cli.layout import results_table
    from neo.parallel.search import candidates

    found = search_layouts(compose([*SMALL, "mesh=cpu-8"]), and_mesh_shape=True, exact_top=3)
    compiled = [r for r in found.results if r.report is not None]
    assert found.ranked == len(compiled) == 3 and found.exact  # 8 real (host) CPU devices: cpu-8 exactly
    assert compiled[0].fits and all(r.source == "compiled" for r in compiled)  # CPU targets compile in full
    assert [r.step_time_s for r in compiled if r.fits] == sorted(r.step_time_s for r in compiled if r.fits)
    assert found.considered == len(candidates(8, and_mesh_shape=True)) == len(found.results)
    rest = [r for r in found.results if r.report is None]
    assert rest and all(r.error for r in rest)  # rejected, or not compiled, each with its reason
    assert any(r.skipped and "--compile" in r.error for r in rest)
    # one row per candidate, except that with --top 1 the other two ranked ones share a "2 more ranked" row
    assert results_table(found, "cpu-8", top=1).row_count == len(found.results) - 2 + 1


def test_cli_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["train", "--dry-run", *SMALL, "mesh=cpu-8"]) == 0
    out = capsys.readouterr().out
    assert "per device" in out and "attention kernel: cpu" in out  # `auto`, resolved for these devices
    assert "activations: float32" in out  # model.precision=auto on a CPU preset
    assert run(["train", "--dry-run", *SMALL, "mesh=cpu-8", "model.attention_impl=xla"]) == 0
    assert "attention kernel: xla" in capsys.readouterr().out


needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (pip install libtpu, Linux x86-64): the TPU compiler cannot run here",
)


@needs_libtpu
def test_dry_run_on_a_tpu_preset_uses_the_tpu_compiler() -> None:
    report = dry_run(compose([*SMALL, "mesh=v3-8"]))
    assert report.exact and report.devices == 8 and report.fits
    assert report.compiler.startswith("TPU compiler (libtpu") and "TPU v3" in report.compiler
    assert report.precision == "bfloat16" and "activations: bfloat16" in report.summary()  # auto on a TPU preset
    assert (
        "compiled by: TPU compiler" in report.summary() and "estimate: compiled for simulated" not in report.summary()
    )
    # the TPU compiler lays arrays out in (8, 128) tiles: the tiny model's 64-wide parameters and their two Adam
    # moments take more than their 12 bytes per parameter, which the CPU compiler reports almost exactly
    assert report.argument_bytes > 1.15 * 12 * report.n_params
    assert report.step_time_s > 0 and 0 < report.mfu < 1


@needs_libtpu
def test_the_tpu_compilers_out_of_memory_is_a_verdict_not_a_crash(capsys: pytest.CaptureFixture[str]) -> None:
    """libtpu refuses to compile a program larger than HBM; the dry run reports that as "does NOT fit"."""
    assert run(["train", "--dry-run", "model=gpt_1T", "mesh=v3-2048", "train.batch_size=256"]) == 0
    text = capsys.readouterr().out
    assert "does NOT fit" in text and "Ran out of memory" in text and "TPU compiler (libtpu" in text


def _timed_dry_run(overrides: list[str]) -> tuple[object, float]:
    start = time.perf_counter()
    report = dry_run(compose(overrides))
    return report, time.perf_counter() - start


@pytest.mark.slow
@needs_libtpu
@pytest.mark.parametrize(
    ("model", "mesh", "extra"),
    [
        # GPT-3 175B: fully sharded (embd over x) with 8-way tensor parallelism, 1 sequence per replica
        ("gpt3_175B", "v3-1024", ["mesh.layout=batch:x,embd:x,heads:y,mlp:y", "train.batch_size=128"]),
        # the 1T target needs v5p's 95 GiB chips: the preset's layout also splits the sequence over y
        ("gpt_1T", "v5p-1024", ["train.batch_size=128"]),
    ],
)
def test_the_largest_models_fit_their_pods(model: str, mesh: str, extra: list[str]) -> None:
    report, seconds = _timed_dry_run([f"model={model}", f"mesh={mesh}", *extra])
    assert report.exact and "TPU compiler (libtpu" in report.compiler
    assert report.fits, report.summary()
    assert report.n_params > (1.7e11 if model == "gpt3_175B" else 9e11)
    assert report.step_time_s > 0 and 0 < report.mfu < 1
    print(f"{model} on {mesh}: {seconds:.0f} s\n{report.summary()}")


@pytest.mark.slow
@needs_libtpu
def test_layout_search_for_gpt3_xl_on_v3_256_with_the_tpu_compiler(capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    found = search_layouts(compose(["model=gpt3_xl", "mesh=v3-256", "train.batch_size=512"]), exact_top=2)
    seconds = time.perf_counter() - start
    compiled = [r for r in found.results if r.report is not None]
    assert found.exact and found.compiler.startswith("TPU compiler (libtpu") and len(compiled) == 2
    assert compiled[0].fits and compiled[0].report.memory_bytes < 16 * 2**30
    assert all(0 < r.mfu < 1 for r in compiled if r.fits)
    # both screened, the leader then compiled in full: code generation adds 15-37% temporaries (measured)
    assert compiled[0].source == "compiled" and -0.4 < compiled[0].screen_error <= 0
    print(f"gpt3_xl on v3-256: {seconds:.0f} s, best {compiled[0].candidate}, screen {compiled[0].screen_error:+.1%}")

"""neo.runtime: the `neo` command re-executes itself once with glibc's huge-page tunable, and only when it helps."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from neo import runtime


@pytest.fixture
def supported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "huge_pages_available", lambda: True)


def test_env_gains_the_tunable(supported: None) -> None:
    assert runtime.huge_page_env({"PATH": "/bin"}) == {"PATH": "/bin", "GLIBC_TUNABLES": runtime.TUNABLE}


def test_env_keeps_the_users_tunables(supported: None) -> None:
    env = runtime.huge_page_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"})
    assert env is not None and env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=1:{runtime.TUNABLE}"


@pytest.mark.parametrize(
    "environ",
    [{"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, {"NEO_HUGE_PAGES": "0"}],
    ids=["user-set", "opted-out"],
)
def test_env_left_alone(supported: None, environ: dict[str, str]) -> None:
    assert runtime.huge_page_env(environ) is None


def test_unsupported_platform_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "huge_pages_available", lambda: False)
    assert runtime.huge_page_env({}) is None


def test_reexec_runs_the_command_once_with_the_tunable() -> None:
    code = (
        "import os; from neo.runtime import reexec_with_huge_pages; reexec_with_huge_pages(); "
        "print('ran', os.environ.get('GLIBC_TUNABLES'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "NEO_HUGE_PAGES")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    expected = runtime.TUNABLE if runtime.huge_pages_available() else None
    assert out.splitlines() == [f"ran {expected}"]


def test_the_cli_starts_without_jax_and_sets_its_cache_for_when_it_loads(tmp_path) -> None:
    """`neo data`/`neo tokenizer` never pay JAX's import; the compilation cache is JAX's environment default, and it
    keeps every program (a threshold left `neo sample`'s quick-to-compile programs compiling in every process)."""
    code = (
        "import os, sys; import neo.cli.app; print('jax' in sys.modules); "
        "import jax; print(jax.config.jax_compilation_cache_dir); "
        "print(jax.config.jax_persistent_cache_min_compile_time_secs)"
    )
    env = {**os.environ, "NEO_CACHE_DIR": str(tmp_path)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["False", str(tmp_path / "xla"), "0.0"]


@pytest.mark.parametrize(
    ("argv", "reexecuted"),
    [(["neo", "data", "encode"], False), (["neo", "tokenizer"], False), (["neo", "train"], True), (["neo"], True)],
)
def test_only_commands_that_run_xla_reexecute(monkeypatch: pytest.MonkeyPatch, argv: list, reexecuted: bool) -> None:
    import neo.cli.app
    from neo.cli import entry

    calls: list[str] = []
    monkeypatch.setattr(runtime, "reexec_with_huge_pages", lambda: calls.append("reexec"))
    monkeypatch.setattr(neo.cli.app, "main", lambda: calls.append("cli"))
    monkeypatch.setattr(sys, "argv", argv)
    entry.main()
    assert calls == (["reexec", "cli"] if reexecuted else ["cli"])


@pytest.mark.parametrize(
    ("plugin", "driver", "skipped"), [(True, False, True), (True, True, False), (False, False, False)]
)
def test_the_cuda_plugin_loads_without_a_driver_only_where_none_is(
    monkeypatch: pytest.MonkeyPatch, plugin: bool, driver: bool, skipped: bool
) -> None:
    """With the `cuda` extra on a machine without NVIDIA's driver the plugin's version check (cuInit) would keep it
    from registering, and GPU presets could not compile ahead of time; on a GPU machine the check stays."""
    import importlib.util

    monkeypatch.delenv("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", raising=False)
    monkeypatch.setattr(runtime.os.path, "exists", lambda path: driver and path == "/proc/driver/nvidia")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: object() if plugin and name == "jax_plugins.xla_cuda12" else None
    )
    runtime._prepare_gpu_aot()
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)
    assert (os.environ.get("JAX_SKIP_CUDA_CONSTRAINTS_CHECK") == "1") is skipped

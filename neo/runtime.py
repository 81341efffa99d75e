"""Process-level set-up that must be in place before Python or JAX starts: transparent huge pages for malloc, the
persistent compilation cache, and the TPU and GPU compilers loadable on machines without those chips (ahead-of-time
compiles). Nothing here imports JAX: commands that never touch it (data, tokenizer) must not pay its 0.5 s import.

Huge pages:

XLA CPU allocates a step's large buffers (activations, logits, gradients: ~440 MB for the benchmark model) fresh
every step. glibc serves them with new mmaps, and the kernel faults them in 4 KiB at a time: ~114k page faults per
step. With glibc's `hugetlb=1` tunable, malloc asks for transparent huge pages
(madvise(MADV_HUGEPAGE)), so the same memory arrives in 2 MiB pages: ~8k faults and a ~8% faster CPU train step
(`benchmarks/train.py`). PyTorch, which caches its buffers, gains ~1% from the same setting.

glibc reads its tunables only at process start, so the `neo` console script re-executes itself once with the
tunable added (`reexec_with_huge_pages`). `NEO_HUGE_PAGES=0` turns it off.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
_THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_pages_available() -> bool:
    """glibc ≥ 2.35 (the first with the tunable) on Linux, with transparent huge pages not disabled."""
    if sys.platform != "linux":
        return False
    libc, version = platform.libc_ver()
    if libc != "glibc" or tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < (2, 35):
        return False
    try:
        return "[never]" not in _THP_SETTING.read_text()
    except OSError:
        return False


def huge_page_env(environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """`environ` with glibc's huge-page tunable added, or None when it is already there, off, or unsupported."""
    env = dict(os.environ if environ is None else environ)
    tunables = env.get("GLIBC_TUNABLES", "")
    if env.get("NEO_HUGE_PAGES", "1") == "0" or "glibc.malloc.hugetlb" in tunables or not huge_pages_available():
        return None
    env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    return env


def reexec_with_huge_pages() -> None:
    """Replace this process by the same command line with the tunable set; returns only when none is needed."""
    env = huge_page_env()
    if env is not None and sys.executable:  # an embedded interpreter has no executable to restart
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def persistent_compilation_cache() -> None:
    """Compiled XLA programs are kept on disk (under `cache_dir()`, which NEO_CACHE_DIR moves), so a repeated
    `neo sample`/`neo train` skips recompilation. Every program is kept, however quick its compile: with a 0.5 s
    threshold `neo sample`'s small programs (its cache writes, ~0.3 s each) compiled again in every process.
    Set through JAX's environment, which it reads when imported."""
    from neo.storage import cache_dir

    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir() / "xla")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    if "jax" in sys.modules:  # imported already (the CLI run in-process, as tests do): too late for the environment
        import jax

        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def prepare_aot() -> None:
    """Before JAX starts: let the compilers of absent accelerators load, for ahead-of-time compiles of TPU and GPU
    presets (`neo.parallel.targets`)."""
    _prepare_tpu_aot()
    _prepare_gpu_aot()


def _prepare_tpu_aot() -> None:
    """Where libtpu is installed (for ahead-of-time TPU compiles) but no TPU chip is attached, keep it quiet and
    shareable. Asks JAX's own PCI probe, loaded from its file so the JAX package is not imported."""
    import importlib.util

    if importlib.util.find_spec("libtpu") is None:
        return
    try:
        spec = importlib.util.find_spec("jax")
        assert spec is not None and spec.submodule_search_locations
        probe_file = Path(next(iter(spec.submodule_search_locations))) / "_src" / "hardware_utils.py"
        probe_spec = importlib.util.spec_from_file_location("neo_tpu_probe", probe_file)
        assert probe_spec is not None and probe_spec.loader is not None
        probe = importlib.util.module_from_spec(probe_spec)
        probe_spec.loader.exec_module(probe)
        chips, _ = probe.num_available_tpu_chips_and_device_id()
    except Exception:  # a JAX without the probe: leave libtpu's defaults alone
        return
    if chips == 0:
        quiet_libtpu_off_tpu()


def _prepare_gpu_aot() -> None:
    """Where the jax-cuda12 plugin (the `cuda` extra) is installed but no NVIDIA driver is, the plugin would refuse to
    register at all (its version check calls cuInit), and with it its compile-only GPU topology. Skip that check
    there: JAX still starts on the CPU, and `neo.parallel.gpu_targets` can compile for GPUs."""
    import importlib.util

    if os.path.exists("/proc/driver/nvidia"):
        return
    try:
        if importlib.util.find_spec("jax_plugins.xla_cuda12") is None:
            return
    except ModuleNotFoundError:
        return
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")


def quiet_libtpu_off_tpu() -> None:
    """Let libtpu load as a compile-only library on a machine without TPUs.

    Without these, libtpu guesses the host's TPU type from cloud metadata and prints warnings, and it takes an
    exclusive /tmp lockfile, so a second process (another search, a test worker) could not load it at all.
    """
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # no TPU is driven, so sharing the library is safe
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v3-8")  # only silences host detection; the topology decides
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")

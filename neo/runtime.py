"""Process-level tuning that must be in place before Python starts: transparent huge pages for malloc.

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

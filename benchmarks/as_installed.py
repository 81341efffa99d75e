"""What the end-to-end benchmarks do before timing the `neo` command, so that it runs as an installed neo runs."""

from __future__ import annotations

import compileall
from pathlib import Path


def byte_compile_neo() -> None:
    """neo's modules byte-compiled once, as `pip install` does: an editable install run with PYTHONDONTWRITEBYTECODE
    (set on some machines) would compile them again in every timed process (~0.05 s), which no installed user pays."""
    import neo

    compileall.compile_dir(Path(neo.__file__).parent, quiet=1)

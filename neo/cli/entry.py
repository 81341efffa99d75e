"""The `neo` console script. It imports nothing heavy before `neo.runtime` may re-execute the process with the
allocator tuned (glibc reads its tunables only at start-up); then it runs the CLI."""

from __future__ import annotations

import sys

# command groups that never run XLA: the re-exec (a second interpreter start-up) would buy them nothing
WITHOUT_XLA = frozenset({"data", "tokenizer", "config"})


def main() -> None:
    if not WITHOUT_XLA.intersection(sys.argv[1:2]):
        from neo.runtime import reexec_with_huge_pages

        reexec_with_huge_pages()
    from neo.cli.app import main as run_cli

    run_cli()

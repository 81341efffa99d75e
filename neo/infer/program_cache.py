"""Traced decoding programs kept on local disk, so that a repeated `neo sample` does not trace the model again.

JAX's persistent compilation cache (`neo.runtime`) skips XLA's compile, but every new process still traces the model
and lowers it to StableHLO before it can look the compiled program up: for neo_125M on CPU ~0.4 s for the prefill
program alone, before the first token. Here each single-device decoding program is kept as a serialized
`jax.export.Exported` (portable StableHLO with its argument and result structure): a later process deserializes it
and calls it under `jax.jit`, which only lowers the stored module, and XLA's compile is then a persistent-cache hit.

The key is everything the program depends on without tracing it: the function's name and static arguments, the tree
structure, shapes and dtypes of its arguments, the model config, the source of the `neo` package, the JAX version,
the JAX flags that change what is traced (64-bit types, default matmul precision) and whether neo's CPU kernels for
decoding (`neo.model.cpu_matvec`) are in it. `NEO_PROGRAM_CACHE=0` turns it off; only the newest `KEEP` files are
kept under `NEO_CACHE_DIR/programs` (default `~/.cache/neo`). A file that cannot be read is traced again and replaced;
a write that fails (a full or read-only disk) only loses the speed-up.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from neo.model import cpu_matvec

FORMAT = "1"  # bump when the file layout changes
KEEP = 64


def enabled() -> bool:
    return os.environ.get("NEO_PROGRAM_CACHE", "1") != "0"


class CachedProgram:
    """`fn(*args, **static)` for a function that `jax.jit` would compile, through the program cache.

    `fn` is the plain (not jitted) function; `static_argnames` and `donate_argnums` are as for `jax.jit`. `context` is
    what else determines the program (the model config). Calls dispatch through `jax.jit` as usual; only when it meets
    a new signature does it run `_stored`, which calls the stored program instead of tracing `fn`.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        context: str,
        static_argnames: tuple[str, ...] = (),
        donate_argnums: tuple[int, ...] = (),
    ):
        self.fn, self.name, self.context = fn, name, context
        self._jitted = jax.jit(self._stored, static_argnames=static_argnames, donate_argnums=donate_argnums)

    def __call__(self, *args: Any, **static: Any) -> Any:
        return self._jitted(*args, **static)

    def _stored(self, *args: Any, **static: Any) -> Any:
        """The stored program for these arguments' shapes, else `fn` exported now (and stored for next time)."""
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), args)
        leaves, tree = jax.tree.flatten(abstract)
        signature = (tree, tuple((x.shape, x.dtype) for x in leaves), tuple(sorted(static.items())))
        path = _path(self.name, self.context, (signature, _uses_cpu_kernels()))
        exported = _read(path)
        if exported is None:
            program = jax.jit(functools.partial(self.fn, **static))
            exported = jax.export.export(program, disabled_checks=cpu_matvec.DISABLED_CHECKS)(*abstract)
            _write(path, exported)
        return exported.call(*args)


def _uses_cpu_kernels() -> bool:
    """Whether neo's CPU kernels stand in for XLA's products in this program (on a CPU, the kernels built; the
    attention over a KV cache uses them at every precision): such a program calls them, so they are built and
    registered here before the program runs."""
    return jax.default_backend() == "cpu" and cpu_matvec.ready()


def _path(name: str, context: str, signature: Any) -> Path:
    from neo.storage import cache_dir

    flags = (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)  # they change what is traced
    parts = (FORMAT, name, context, repr(signature), repr(flags), _source_digest(), jax.__version__)
    parts += (jax.default_backend(),)
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
    return cache_dir() / "programs" / f"{name}-{key}.exported"


@functools.cache
def _source_digest() -> str:
    """A digest of every module of the `neo` package: a changed model (a new version, a local edit) is a new key."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted([*root.rglob("*.py"), *root.rglob("*.cc")]):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _read(path: Path) -> jax.export.Exported | None:
    try:
        exported = jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception:  # absent, torn (flatbuffers raises struct.error), or from another JAX: trace it again
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # most recently used: the last to be pruned
    return exported


def _write(path: Path, exported: jax.export.Exported) -> None:
    """Store the program at `path` complete or not at all, then prune to the newest `KEEP`."""
    from neo import storage

    try:
        storage.write_atomic(path, exported.serialize())
        storage.keep_newest(path.parent, "*.exported", KEEP)
    except OSError:
        return

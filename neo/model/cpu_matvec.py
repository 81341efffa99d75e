"""The products batch-1 decoding streams from memory, on CPU, through kernels of neo's own (`cpu_matvec.cc`): a few
float32 rows times an int8 or bfloat16 weight, one row times a float32 weight, and attention's per-head products with
a float32 or bfloat16 KV cache.

Batch-1 decoding is bound by the bytes of weight it reads per token, but XLA's CPU backend has no fast
low-precision matrix-vector product: it widens the weight before its dot, and a bf16 or int8 decoder ran ~8-10x
slower than float32 (benchmarks/README.md). The kernel widens each weight vector in registers right before its
multiply-adds, so memory carries one or two bytes per weight, and it runs as an XLA FFI custom call on XLA's own
thread pool. Each thread streams several weight rows at once, which keeps more reads in flight than XLA's own
float32 matrix-vector product does (~1.2x its rate here). A decode step's attention reads the whole KV cache with
one small dot per head; XLA CPU runs those at about half the memory's rate, `cache_scores` and `cache_mix` at its
full rate.

The same library transposes bfloat16 matrices for bf16 training on CPU (`transposed`, `neo.model.kernels.cpu`) and
runs float32 training's causal attention, forward and backward (`attention`, its source `cpu_attention.cc`).

It is compiled on first use with the machine's C++ compiler (`$CXX`, else g++, c++ or clang++) for this CPU
(`-march=native`), against the XLA FFI headers that ship with jaxlib, into `NEO_CACHE_DIR/kernels` (default
`~/.cache/neo`), keyed by its sources, the JAX version, the compiler and the CPU. Where no compiler works,
decoding falls back to XLA's product (same numbers, slower) with one warning; `NEO_CPU_KERNELS=0` turns the kernel
off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from neo.model.quantize import Bf16Weight, Int8Weight, is_low_bit

SOURCE = Path(__file__).with_suffix(".cc")
SOURCES = (SOURCE, SOURCE.with_name("cpu_attention.cc"))  # one library; both include cpu_kernels.h
HEADER = SOURCE.with_name("cpu_kernels.h")
INT8, BF16, F32 = "neo_rows_times_int8", "neo_rows_times_bf16", "neo_rows_times_f32"  # the custom-call targets
THREE = {Int8Weight: "neo_rows_times_int8x3", Bf16Weight: "neo_rows_times_bf16x3", jax.Array: "neo_rows_times_f32x3"}
SCORES, MIX = "neo_cache_scores", "neo_cache_mix"
TRANSPOSE = "neo_transpose_bf16"
ATTEND, ATTEND_GRAD = "neo_attention_f32", "neo_attention_f32_grad"  # float32 training attention (cpu_attention.cc)
# the most rows the kernel takes (a decode step's few, or a short prefill's): its tiles re-read x for every 4 weight
# rows, 1.2x XLA's time at 128 rows, 1.3x at 256, 1.8x at 512 once XLA's widened weights are in place; up to 256
# that costs less than the widening a fresh process pays (benchmarks/README.md)
MAX_ROWS = 256
TARGETS = (INT8, BF16, F32, *THREE.values(), SCORES, MIX, TRANSPOSE, ATTEND, ATTEND_GRAD)
DISABLED_CHECKS = tuple(jax.export.DisabledSafetyCheck.custom_call(name) for name in TARGETS)


def handles(x: jax.Array, w: object) -> bool:
    """Whether `rows_times(x, w)` runs the kernel: float32 rows on a CPU, not sharded over a mesh, a kernel built, and
    a low-precision weight with at most MAX_ROWS rows, or a float32 weight [o, k] with one row (batch-1 decoding, where
    the kernel streams the weight faster than XLA's matrix-vector product)."""
    if is_low_bit(w):
        fits = x.shape[0] <= MAX_ROWS
    else:
        fits = getattr(w, "dtype", None) == jnp.float32 and getattr(w, "ndim", 0) == 2 and x.shape[0] == 1
    return (
        fits
        and x.dtype == jnp.float32
        and jax.default_backend() == "cpu"
        and jax.sharding.get_abstract_mesh().empty
        and ready()
    )


def rows_times(x: jax.Array, w: jax.Array | Int8Weight | Bf16Weight) -> jax.Array:
    """x [n, k] float32 times a weight stored [o, k]: [n, o] float32 (see `handles`)."""
    if isinstance(w, Int8Weight):
        return jax.ffi.ffi_call(INT8, jax.ShapeDtypeStruct((x.shape[0], w.q.shape[0]), jnp.float32))(x, w.q, w.scale)
    target, stored = (BF16, w.w) if isinstance(w, Bf16Weight) else (F32, w)
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((x.shape[0], stored.shape[0]), jnp.float32))(x, stored)


def rows_times_three(x: jax.Array, ws: tuple[Any, Any, Any]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`rows_times(x, w)` for three weights of one kind (attention's q, k and v) in one call: the threads are handed
    work once, not three times (~5% of a bfloat16 step's products). Each must be one `handles` takes."""
    out = tuple(jax.ShapeDtypeStruct((x.shape[0], _stored(w).shape[0]), jnp.float32) for w in ws)
    if isinstance(ws[0], Int8Weight):
        return jax.ffi.ffi_call(THREE[Int8Weight], out)(x, *(a for w in ws for a in (w.q, w.scale)))
    kind = Bf16Weight if isinstance(ws[0], Bf16Weight) else jax.Array
    return jax.ffi.ffi_call(THREE[kind], out)(x, *(_stored(w) for w in ws))


def _stored(w: Any) -> jax.Array:
    return w.stored if is_low_bit(w) else w


def _runs_here() -> bool:
    """Whether the training kernels can run on what is traced now: a CPU, not a mesh of several devices (a kernel sees
    one device's buffers), a kernel built."""
    return jax.default_backend() == "cpu" and jax.sharding.get_abstract_mesh().size <= 1 and ready()


def transposes(a: jax.Array) -> bool:
    """Whether `transposed(a)` and `swapped(a, ...)` run the kernel: a bfloat16 array where `_runs_here`."""
    return a.dtype == jnp.bfloat16 and _runs_here()


def transposed(a: jax.Array) -> jax.Array:
    """a.T [c, r] of a bfloat16 matrix [r, c] as a new row-major array, which XLA cannot fold into the dot that reads
    it: XLA CPU's fast bfloat16 product takes row-major operands only (see `neo.model.kernels.cpu`)."""
    return swapped(a, 1, a.shape[0], a.shape[1], 1).reshape(a.shape[::-1])


def swapped(a: jax.Array, n: int, r: int, c: int, w: int) -> jax.Array:
    """A bfloat16 array read as [n, r, c, w], returned as [n, c, r, w]: n matrices transposed, each element w values
    wide (for attention's heads-first and transposed operands), by neo's kernel like `transposed`."""
    return jax.ffi.ffi_call(TRANSPOSE, jax.ShapeDtypeStruct((n, c, r, w), a.dtype))(a.reshape(n, r, c, w))


def handles_cache(cache: jax.Array) -> bool:
    """Whether `cache_scores` and `cache_mix` run the kernel on `cache`: a float32 or bfloat16 cache on a CPU, not
    sharded over a mesh (the kernel sees one device's buffers), a kernel built."""
    return (
        cache.dtype in (jnp.float32, jnp.bfloat16, jnp.uint16)  # uint16: bfloat16's bits
        and jax.default_backend() == "cpu"
        and jax.sharding.get_abstract_mesh().empty
        and ready()
    )


def cache_scores(q: jax.Array, k: jax.Array) -> jax.Array:
    """q [..., d] float32 against a cache k [..., s, d]: scores [..., s] float32 (each head's q . k[j])."""
    lead, (s, d) = k.shape[:-2], k.shape[-2:]
    n = math.prod(lead)
    out = jax.ffi.ffi_call(SCORES, jax.ShapeDtypeStruct((n, s), jnp.float32))(q.reshape(n, d), k.reshape(n, s, d))
    return out.reshape(*lead, s)


def cache_mix(p: jax.Array, v: jax.Array) -> jax.Array:
    """p [..., s] float32 over a cache v [..., s, d]: [..., d] float32 (each head's sum of p[j] . v[j])."""
    lead, (s, d) = v.shape[:-2], v.shape[-2:]
    n = math.prod(lead)
    out = jax.ffi.ffi_call(MIX, jax.ShapeDtypeStruct((n, d), jnp.float32))(p.reshape(n, s), v.reshape(n, s, d))
    return out.reshape(*lead, d)


@functools.cache
def ready() -> bool:
    """Build (once per machine) and register the kernel; False, after one warning, where that is not possible."""
    if os.environ.get("NEO_CPU_KERNELS", "1") == "0":
        return False
    try:
        _register(_build())
    except (OSError, subprocess.SubprocessError, AttributeError) as e:
        warnings.warn(
            f"neo: could not build its CPU kernels ({e}); decoding and training fall back to XLA's "
            "products, slower (several times for int8/bfloat16 weights; install a C++ compiler such as g++ to fix)",
            stacklevel=2,
        )
        return False
    return True


_REGISTERED: list[Path] = []


def _register(library: Path) -> None:
    """Register the targets once per process: XLA refuses a second handler under a name (a build in another cache
    directory is the same code at other addresses)."""
    if _REGISTERED:
        return
    loaded = ctypes.CDLL(str(library))
    symbols = {INT8: loaded.NeoRowsTimesInt8, BF16: loaded.NeoRowsTimesBf16, F32: loaded.NeoRowsTimesF32}
    symbols |= {THREE[Int8Weight]: loaded.NeoRowsTimesInt8x3, THREE[Bf16Weight]: loaded.NeoRowsTimesBf16x3}
    symbols |= {THREE[jax.Array]: loaded.NeoRowsTimesF32x3, SCORES: loaded.NeoCacheScores, MIX: loaded.NeoCacheMix}
    symbols |= {TRANSPOSE: loaded.NeoTransposeBf16}
    symbols |= {ATTEND: loaded.NeoAttentionF32, ATTEND_GRAD: loaded.NeoAttentionF32Grad}
    for name, symbol in symbols.items():
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(symbol), platform="cpu")
    _REGISTERED.append(library)


def _build() -> Path:
    """The kernel's shared library for this machine, compiled now unless an earlier process did."""
    from neo.storage import cache_dir, write_atomic

    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        raise OSError("no C++ compiler found")
    arch = "-mcpu=native" if platform.machine() in ("arm64", "aarch64") else "-march=native"
    flags = ["-O3", arch, "-std=c++17", "-shared", "-fPIC", "-w", f"-I{jax.ffi.include_dir()}"]
    parts = [*(f.read_text() for f in (*SOURCES, HEADER)), jax.__version__, compiler, *flags, _cpu_identity()]
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]
    target = cache_dir() / "kernels" / f"cpu_matvec-{key}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as scratch:
        built = Path(scratch) / target.name
        command = [compiler, *flags, *map(str, SOURCES), "-o", str(built)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or ["no output"]
            raise OSError(f"{Path(compiler).name} failed: " + next((x for x in lines if "error" in x), lines[0]))
        write_atomic(target, built.read_bytes())  # a concurrent build of the same key writes the same bytes
    return target


def amx_bf16() -> bool:
    """Whether this CPU has AMX-BF16 tiles, on which XLA CPU's bfloat16 products run several times its float32 ones
    (its flags in `_cpu_identity`; False where they cannot be read)."""
    return "amx_bf16" in _cpu_identity().split()


def _cpu_identity() -> str:
    """What `-march=native` compiles for: the CPU's model and instruction-set flags (a shared cache directory may be
    seen from machines of several kinds)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    lines = [line for line in info.splitlines() if line.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(dict.fromkeys(lines))


def attends(q: jax.Array, k: jax.Array, v: jax.Array) -> bool:
    """Whether `attention` runs the kernel: q, k, v float32 [batch, length, heads, d] of one shape, d a multiple of
    16, where `_runs_here`."""
    return (
        q.shape == k.shape == v.shape
        and q.dtype == k.dtype == v.dtype == jnp.float32
        and q.ndim == 4
        and q.shape[-1] % 16 == 0
        and _runs_here()
    )


def attention(q: jax.Array, k: jax.Array, v: jax.Array, window: int | None) -> tuple[jax.Array, jax.Array]:
    """Causal softmax(q · kᵀ) · v without scaling (within `window` keys when local) for float32 q, k, v [batch,
    length, heads, d]: the output and each row's log-sum-exp [batch, heads, length] (see `attends`)."""
    b, length, h, _ = q.shape
    shapes = (jax.ShapeDtypeStruct(q.shape, jnp.float32), jax.ShapeDtypeStruct((b, h, length), jnp.float32))
    return jax.ffi.ffi_call(ATTEND, shapes)(q, k, v, window=np.int64(window or 0))


def attention_grad(
    q: jax.Array, k: jax.Array, v: jax.Array, out: jax.Array, lse: jax.Array, d_out: jax.Array, window: int | None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The gradients of `attention` for q, k and v, from its output, log-sum-exps and the output's gradient."""
    shapes = tuple(jax.ShapeDtypeStruct(q.shape, jnp.float32) for _ in range(3))
    return jax.ffi.ffi_call(ATTEND_GRAD, shapes)(q, k, v, out, lse, d_out, window=np.int64(window or 0))

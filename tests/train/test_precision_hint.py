"""The bfloat16 hint for float32 runs on CPUs with AMX-BF16 (`neo.train.precision_hint`, `cpu_matvec.amx_bf16`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from neo.config import compose
from neo.model import cpu_matvec
from neo.train.precision_hint import pinned_precision, precision_hint


def test_the_hint_is_for_float32_cpu_runs_on_amx_whose_precision_the_user_left() -> None:
    f32, bf16 = compose(["model=tiny"]), compose(["model=tiny", "model.precision=bfloat16"])
    hint = precision_hint(f32, pinned=False, backend="cpu", amx_bf16=True)
    assert hint is not None and "model.precision=bfloat16" in hint
    assert precision_hint(f32, pinned=True, backend="cpu", amx_bf16=True) is None  # the user chose float32
    assert precision_hint(bf16, pinned=False, backend="cpu", amx_bf16=True) is None
    assert precision_hint(f32, pinned=False, backend="gpu", amx_bf16=True) is None
    assert precision_hint(f32, pinned=False, backend="cpu", amx_bf16=False) is None


def test_pinned_precision_reads_the_command_line() -> None:
    assert pinned_precision(["model=tiny", "model.precision=float32"]) and pinned_precision(["+model.precision=x"])
    assert not pinned_precision(["model=tiny", "model.param_dtype=float32", "train.steps=3"])


@pytest.mark.parametrize(
    ("flags", "has"), [("fpu avx512f amx_bf16 amx_tile", True), ("fpu avx512f avx512_bf16", False)]
)
def test_amx_bf16_reads_the_cpu_flags(flags: str, has: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n")
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: real(info if str(self) == "/proc/cpuinfo" else self))
    assert cpu_matvec.amx_bf16() is has

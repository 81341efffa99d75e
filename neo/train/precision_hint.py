"""A one-line hint when a float32 run on a CPU would train about twice as fast in bfloat16 mixed precision.

On CPUs with AMX-BF16 tiles XLA CPU multiplies bfloat16 several times faster than float32, and `neo train
model.precision=bfloat16` (float32 parameters and optimizer state, bf16 products) measured 2.2x the float32 command
on the benchmark model (benchmarks/README.md). float32 stays the default (it is what the user's numbers compare
against), so the hint names the override and what it keeps.
"""

from __future__ import annotations

from neo.config import NeoConfig


def pinned_precision(overrides: list[str]) -> bool:
    """Whether the command line sets model.precision itself."""
    return any(o.split("=", 1)[0].lstrip("+~") == "model.precision" for o in overrides)


def precision_hint(cfg: NeoConfig, pinned: bool, backend: str, amx_bf16: bool) -> str | None:
    """The hint for a float32 run on a CPU with AMX-BF16 whose precision the user did not choose; else None."""
    if pinned or backend != "cpu" or cfg.model.precision not in ("auto", "float32") or not amx_bf16:
        return None
    return "hint: this CPU has AMX-BF16: model.precision=bfloat16 trains ~2x faster (weights, optimizer stay float32)"


def hint_for_this_machine(cfg: NeoConfig, overrides: list[str]) -> str | None:
    """`precision_hint` for this process's backend and CPU."""
    import jax

    from neo.model.cpu_matvec import amx_bf16

    return precision_hint(cfg, pinned_precision(overrides), jax.default_backend(), amx_bf16())

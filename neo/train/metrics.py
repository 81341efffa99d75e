"""Throughput and MFU accounting, and the run's metric sinks (metrics.jsonl and TensorBoard)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from neo.model.config import ModelConfig


def flops_per_token(cfg: ModelConfig, n_params: int) -> float:
    """Training FLOPs per token: 6N for the matmuls (forward + backward) plus the attention scores and values.

    The attention term is 12 · n_embd · (keys each query sees) per layer (PaLM's 6N + 12·L·H·Q·T, with T the
    context a layer attends over: the window for local layers, none for `none` layers).
    """
    attention = 0.0
    for kind in cfg.layer_types():
        if kind in ("global", "linear"):
            attention += 12 * cfg.n_embd * cfg.n_ctx
        elif kind == "local":
            attention += 12 * cfg.n_embd * min(cfg.window_size, cfg.n_ctx)
    return 6.0 * n_params + attention


class MetricsWriter:
    """Append-only metrics: one JSON object per logged step in metrics.jsonl, mirrored to TensorBoard."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._tb: Any = None
        if enabled:
            import tensorflow as tf

            self._tb = tf.summary.create_file_writer(str(run_dir / "tensorboard"))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if not isinstance(v, int | str) else v) for k, v in row.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
        import tensorflow as tf

        with self._tb.as_default(step=int(row["step"])):
            for key, value in clean.items():
                if key != "step" and isinstance(value, float) and math.isfinite(value):
                    tf.summary.scalar(key, value)
        self._tb.flush()

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows past the checkpoint we restart from, so metrics.jsonl reads like one clean run."""
        if not self.enabled or not self.path.exists():
            return
        rows = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(r + "\n" for r in rows))
        tmp.replace(self.path)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()

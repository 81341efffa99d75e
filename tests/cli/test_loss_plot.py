"""The terminal loss plot: columns follow the curve, labels name its range and steps."""

from __future__ import annotations

import json
from pathlib import Path

from neo.cli.loss_plot import BLOCKS, read_losses, render_loss_plot


def _heights(plot: str) -> list[int]:
    """Eighths filled in each column, read back from the rendered rows."""
    rows = [line.split("┤", 1)[1] for line in plot.splitlines() if "┤" in line]
    return [sum(BLOCKS.index(row[col]) for row in rows) for col in range(len(rows[0]))]


def test_a_falling_curve_draws_falling_columns_with_its_range_and_steps() -> None:
    points = [(step, 8.0 - step / 100) for step in range(0, 600, 10)]  # 60 points, 8.0 → 2.1
    plot = render_loss_plot(points, width=30, height=6)
    heights = _heights(plot)
    assert len(heights) == 30
    assert heights == sorted(heights, reverse=True) and heights[0] == 6 * 8 and heights[-1] == 1
    lines = plot.splitlines()
    assert lines[0].startswith("7.95 ┤") and lines[5].startswith("2.15 ┤")  # means of the first and last pairs
    assert lines[-1].split() == ["step", "0", "step", "590"]


def test_fewer_points_than_columns_one_column_each() -> None:
    assert len(_heights(render_loss_plot([(0, 3.0), (10, 2.0), (20, 2.5)], width=60))) == 3


def test_read_losses_skips_eval_rows_and_a_torn_last_row(tmp_path: Path) -> None:
    rows = [{"step": 0, "eval_loss": 9.0}, {"step": 10, "loss": 5.0}, {"step": 20, "loss": 4.0}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 30, "lo', encoding="utf-8")
    assert read_losses(path) == [(10, 5.0), (20, 4.0)]

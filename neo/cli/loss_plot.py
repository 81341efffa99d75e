"""A run's loss curve as a small terminal plot: one column per step range, drawn with eighth-block characters."""

from __future__ import annotations

import json
from pathlib import Path

BLOCKS = " ▁▂▃▄▅▆▇█"  # 0..8 eighths of a cell


def read_rows(metrics_path: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl, skipping a torn last row of a killed run."""
    rows = []
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_losses(metrics_path: Path) -> list[tuple[int, float]]:
    """(step, training loss) of every logged step, in step order (a step logged twice, after a resume: last wins)."""
    return sorted({int(row["step"]): float(row["loss"]) for row in read_rows(metrics_path) if "loss" in row}.items())


def render_loss_plot(points: list[tuple[int, float]], width: int = 60, height: int = 8) -> str:
    """Bars of the mean loss over each of `width` equal step ranges, `height` rows tall, with axis labels.

    The y axis spans the lowest to the highest column mean, so the fall of the curve fills the plot.
    """
    if not points:
        return "(no training loss logged)"
    columns = _column_means(points, width)
    low, high = min(columns), max(columns)
    span = (high - low) or 1.0
    eighths = [round((value - low) / span * (height * 8 - 1)) + 1 for value in columns]
    label_width = len(f"{high:.2f}")
    rows = []
    for row in range(height - 1, -1, -1):
        cells = "".join(BLOCKS[min(8, max(0, level - row * 8))] for level in eighths)
        label = f"{high:.2f}" if row == height - 1 else f"{low:.2f}" if row == 0 else ""
        rows.append(f"{label:>{label_width}} ┤{cells}")
    first, last = points[0][0], points[-1][0]
    axis = f"{'':>{label_width}} └{'─' * len(columns)}"
    left, right = f"step {first}", f"step {last}"
    steps = left if first == last else left.ljust(max(len(columns), len(left) + len(right) + 1) - len(right)) + right
    return "\n".join([*rows, axis, f"{'':>{label_width}}  {steps}"])


def _column_means(points: list[tuple[int, float]], width: int) -> list[float]:
    """Mean loss of the points falling in each of min(width, len(points)) equal slices of the run."""
    n = min(width, len(points))
    slices: list[list[float]] = [[] for _ in range(n)]
    for i, (_, loss) in enumerate(points):
        slices[i * n // len(points)].append(loss)
    return [sum(s) / len(s) for s in slices]

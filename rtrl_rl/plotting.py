"""Learning-curve PNGs from a run's ``metrics.csv``.

Uses matplotlib's Agg canvas directly (no pyplot), so it never touches the global backend
and works on headless machines and in worker threads.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path


def _to_float(text: str | None) -> float:
    """Parse one CSV cell; empty or malformed cells become NaN."""
    if text is None or text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_curve(csv_path: str | os.PathLike, x: str, y: str) -> tuple[list[float], list[float]]:
    """Read the finite ``(x, y)`` pairs of two columns of a CSV file.

    Rows where either value is empty, malformed or non-finite are skipped.
    Raises ``ValueError`` if a column is missing from the header.
    """
    xs: list[float] = []
    ys: list[float] = []
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for col in (x, y):
            if col not in header:
                raise ValueError(f"column '{col}' not in {csv_path} (columns: {', '.join(header)})")
        for row in reader:
            xv, yv = _to_float(row.get(x)), _to_float(row.get(y))
            if math.isfinite(xv) and math.isfinite(yv):
                xs.append(xv)
                ys.append(yv)
    return xs, ys


def _ema(values: list[float], alpha: float) -> list[float]:
    """Exponential moving average, debiased so early points are not pulled toward 0."""
    out: list[float] = []
    avg, weight = 0.0, 0.0
    for v in values:
        avg = alpha * avg + (1 - alpha) * v
        weight = alpha * weight + (1 - alpha)
        out.append(avg / weight)
    return out


def plot_learning_curve(
    csv_path: str | os.PathLike,
    png_path: str | os.PathLike,
    x: str = "env_frames",
    y: str = "return_mean",
    title: str | None = None,
    smoothing: float = 0.9,
) -> Path:
    """Plot column ``y`` against column ``x`` of ``csv_path`` and save it as a PNG.

    Draws the raw points faintly and an EMA-smoothed line (``smoothing`` in [0, 1); 0 turns
    it off). A file with no finite points still gives a PNG saying so. The PNG is written
    to a temporary file and renamed, so a reader never sees a half-written image.
    Returns the PNG path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xs, ys = read_curve(csv_path, x, y)
    png_path = Path(png_path)
    fig = Figure(figsize=(7, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if xs:
        smoothed = smoothing > 0 and len(ys) > 2
        ax.plot(xs, ys, color="C0", alpha=0.3 if smoothed else 1.0, linewidth=1, label=y)
        if smoothed:
            ax.plot(xs, _ema(ys, smoothing), color="C0", linewidth=2, label=f"{y} (EMA)")
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title if title is not None else Path(csv_path).parent.name)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()

    tmp = png_path.with_name(f".{png_path.name}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, png_path)
    finally:
        tmp.unlink(missing_ok=True)
    return png_path

"""Console tables, JSON results, PNG plots and progress bars shared by every benchmark."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def progress(
    iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", **kwargs
):
    """A tqdm progress bar on stderr (plain text when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
        **kwargs,
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Left-aligned text table of `rows` (dicts), one column per key."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(columns, widths)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def format_markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> str:
    """The same table as GitHub markdown, for pasting into the README."""
    if not rows:
        return ""
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
        return _jsonable(np.asarray(value).tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def write_json(path: str | os.PathLike, results: Any) -> Path:
    """Writes `results` as indented JSON (NaN/Inf as strings, dataclasses as dicts), creating
    the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(results), indent=2) + "\n")
    return path


def read_json(path: str | os.PathLike) -> Any:
    """What `write_json` wrote (NaN and Inf stay the strings it wrote them as)."""
    return json.loads(Path(path).read_text())


def read_finished(path: str | os.PathLike, protocol: Mapping[str, Any]) -> Any:
    """The result saved at `path` if it was written under `protocol` (its "protocol" field),
    else None: how a rerun of a long experiment skips the runs it finished and trains again
    those that another protocol wrote. Compared as JSON, as the saved copy went (tuples
    become lists)."""
    path = Path(path)
    if not path.is_file():
        return None
    saved = read_json(path)
    return saved if saved.get("protocol") == json.loads(json.dumps(protocol)) else None


def line_plot(
    path: str | os.PathLike,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logy: bool = False,
    bands: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    levels: Mapping[str, float] | None = None,
) -> Path:
    """Writes a PNG with one line per named (x, y) series.

    `bands` shades (low, high) around the series of the same name (e.g. a 95 %
    interval over seeds); `levels` draws named horizontal dashed lines (e.g. a floor).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, (x, y) in series.items():
        (line,) = ax.plot(x, y, marker="o" if len(x) <= 30 else None, markersize=3, label=name)
        if bands and name in bands:
            low, high = (np.asarray(v, np.float64) for v in bands[name])
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    for name, level in (levels or {}).items():
        ax.axhline(level, color="0.3", linestyle="--", linewidth=1, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_image_grid(path: str | os.PathLike, grid: np.ndarray, title: str) -> Path:
    """PNG of `grid` (rows, columns, side, side) of images in [−1, 1], grey, rows numbered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_rows, count, side, _ = grid.shape
    canvas = -np.ones((num_rows * (side + 1) - 1, count * (side + 1) - 1))
    for row in range(num_rows):
        for column in range(count):
            top, left = row * (side + 1), column * (side + 1)
            canvas[top : top + side, left : left + side] = grid[row, column]
    canvas = np.nan_to_num(canvas, nan=1.0)
    fig, ax = plt.subplots(figsize=(count * 0.45 + 0.6, num_rows * 0.45 + 0.6), dpi=100)
    ax.imshow(canvas, cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_yticks([r * (side + 1) + side / 2 for r in range(num_rows)])
    ax.set_yticklabels(range(num_rows), fontsize=7)
    ax.set_xticks([])
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

"""Accuracy against throughput, the trade-off every compression report shows: its Pareto front and its plot.

One plot serves the search's report and the optimization benchmark: marker area proportional to the model's
size, the Pareto front drawn as a step line, the chosen candidate ringed, and points numbered by a small
collision check (no number overlaps another, a marker or the axes edge), with a table under the axes that
names each number, so long names never crowd the plot. Matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

# Label offsets tried in order (points, from the marker's centre): right, left, up, down, then the diagonals.
OFFSETS = ((9, 0), (-9, 0), (0, 9), (0, -9), (9, 9), (-9, 9), (9, -9), (-9, -9), (16, 0), (-16, 0), (0, 16))


@dataclasses.dataclass(frozen=True)
class Point:
    """One candidate on the plot; `colour` says what kind it is (the caller's legend explains it)."""

    key: str
    accuracy: float
    throughput: float
    size_bytes: int
    colour: str = "tab:green"


@dataclasses.dataclass(frozen=True)
class Reference:
    """A horizontal line across the plot (the teacher's accuracy, the budget's floor)."""

    accuracy: float
    label: str
    style: str = ":"
    colour: str = "black"


def pareto_front(points: Sequence[Point]) -> list[str]:
    """Keys of the points no other point beats on both accuracy and throughput, fastest first."""
    front = [
        p
        for p in points
        if not any(
            o.accuracy >= p.accuracy
            and o.throughput >= p.throughput
            and (o.accuracy > p.accuracy or o.throughput > p.throughput)
            for o in points
        )
    ]
    return [p.key for p in sorted(front, key=lambda p: -p.throughput)]


def figure(panels: int, table_rows: int, width_in: float = 7.5) -> tuple[Any, list[tuple[Any, Any]]]:
    """A figure with one (plot, key table) column per panel; the table is sized for `table_rows` rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows_h = 0.3 * (table_rows + 1)
    fig, axes = plt.subplots(
        2, panels, figsize=(width_in * panels, 4.6 + rows_h), dpi=110, height_ratios=[4.2, rows_h],
        layout="constrained", squeeze=False,
    )  # fmt: skip
    return fig, [(axes[0][i], axes[1][i]) for i in range(panels)]


def draw(
    ax: Any,
    points: Sequence[Point],
    *,
    chosen: str,
    references: Sequence[Reference] = (),
    xlabel: str = "throughput, images/s at batch 64 (log scale)",
    ylabel: str = "accuracy",
    title: str = "",
) -> list[Any]:
    """Draw the trade-off on `ax`; returns the number labels (matplotlib Text objects, for tests)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    xs = [p.throughput for p in points]
    ys = [p.accuracy for p in points]
    biggest = max(p.size_bytes for p in points)
    areas = [40 + 560 * p.size_bytes / biggest for p in points]
    ax.scatter(
        xs,
        ys,
        s=areas,
        c=[p.colour for p in points],
        alpha=0.55,
        edgecolors="black",
        linewidths=0.6,
        zorder=3,
    )
    by_key = {p.key: p for p in points}
    front = [by_key[k] for k in pareto_front(points)]
    ax.step(
        [p.throughput for p in front], [p.accuracy for p in front], where="post", color="tab:blue",
        linewidth=1.4, label="Pareto front", zorder=2,
    )  # fmt: skip
    for ref in references:
        ax.axhline(ref.accuracy, color=ref.colour, linestyle=ref.style, linewidth=1, label=ref.label)
    best = by_key[chosen]
    ax.scatter(
        [best.throughput], [best.accuracy], s=areas[list(by_key).index(chosen)] + 260, facecolors="none",
        edgecolors="gold", linewidths=2.5, label=f"chosen: {chosen}", zorder=4,
    )  # fmt: skip
    ax.set_xscale("log")
    # Ticks at 1, 2 and 5 of each decade, written 20k / 1.5M: the log formatter's minor labels collide.
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_short_number))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, alpha=0.3)
    all_y = [*ys, *(r.accuracy for r in references)]
    pad = max(0.003, (max(all_y) - min(all_y)) * 0.15)
    ax.set_ylim(min(all_y) - pad, max(all_y) + pad)
    ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    offsets = _label_positions(ax, list(zip(xs, ys, strict=True)))
    return [
        ax.annotate(
            str(i),
            (p.throughput, p.accuracy),
            xytext=offset,
            textcoords="offset points",
            ha="center",
            va="center",
            fontsize=9,
            fontweight="bold",
            zorder=5,
        )
        for i, (p, offset) in enumerate(zip(points, offsets, strict=True), 1)
    ]


def key_table(ax: Any, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """The table under the plot: what each number is (first column: the number)."""
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=columns, loc="upper center", cellLoc="center")
    table.auto_set_font_size(False)  # matplotlib's automatic size shrinks the text until it is unreadable
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(columns))))


def _short_number(value: float, _position: Any = None) -> str:
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _label_positions(ax: Any, points: list[tuple[float, float]]) -> list[tuple[int, int]]:
    """An offset per point so that no label box overlaps another label, a marker centre or the axes edge."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.canvas.draw()
    to_px = ax.transData.transform
    px_per_pt = fig.dpi / 72
    frame = ax.get_window_extent()
    centres = [to_px(p) for p in points]
    taken: list[Bbox] = []
    chosen: list[tuple[int, int]] = []
    half_w, half_h = 7 * px_per_pt, 5 * px_per_pt
    for cx, cy in centres:
        pick = OFFSETS[0]
        for dx, dy in OFFSETS:
            x, y = cx + dx * px_per_pt, cy + dy * px_per_pt
            box = Bbox.from_extents(x - half_w, y - half_h, x + half_w, y + half_h)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            clear = not any(box.overlaps(t) for t in taken)
            off_markers = not any(box.contains(mx, my) for mx, my in centres)
            if inside and clear and off_markers:
                pick = (dx, dy)
                break
        x, y = cx + pick[0] * px_per_pt, cy + pick[1] * px_per_pt
        taken.append(Bbox.from_extents(x - half_w, y - half_h, x + half_w, y + half_h))
        chosen.append(pick)
    return chosen

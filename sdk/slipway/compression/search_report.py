"""The compression search's report for people: a Markdown table and the optimization plot.

The plot puts every candidate at (throughput, validation accuracy), its marker area proportional to the
model's size, draws the Pareto front and the accuracy budget, and rings the chosen candidate. Points are
labelled with short numbers placed by a small collision check (no label overlaps another or leaves the axes),
and a table under the axes says which candidate each number is: long names never crowd the plot.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from slipway.compression.search import SearchReport, TrialResult

# Label offsets tried in order (points, from the marker's centre): right, left, up, down, then the diagonals.
OFFSETS = ((9, 0), (-9, 0), (0, 9), (0, -9), (9, 9), (-9, 9), (9, -9), (-9, -9), (16, 0), (-16, 0), (0, 16))


def markdown(report: SearchReport, plot_png: Path | None = None) -> str:
    """The report as Markdown (KFP's Markdown viewer and MLflow render it); the plot inline when given."""
    lines = [
        "# Compression search",
        "",
        f"Teacher validation accuracy {report.teacher_val_accuracy:.4f}; budget {report.budget_points:.2f} "
        f"points; time budget {report.time_budget_s:.0f} s; {report.seconds:.0f} s spent. "
        f"Stopped: {report.stop_reason}. **Chosen: `{report.chosen}`.**",
        "",
        "| # | candidate | params | size KiB | val accuracy | drop (points) | img/s b64 | p99 ms b1 | seconds "
        "| warm start | Pareto |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for i, t in enumerate(report.trials, 1):
        name = f"**{t.key}**" if t.key == report.chosen else t.key
        lines.append(
            f"| {i} | {name} | {t.params:,} | {t.size_bytes / 1024:.1f} | {t.val_accuracy:.4f} | "
            f"{t.drop_points:.2f} | {t.throughput_ips_b64:,.0f} | {t.latency_ms_p99_b1:.3f} | "
            f"{t.seconds:.0f}{' (resumed)' if t.resumed else ''} | {t.warm_start_from or '-'} | "
            f"{'yes' if t.key in report.pareto else ''} |"
        )
    lines += ["", "Why:", "", *[f"- {r}" for r in report.reasons]]
    if plot_png is not None:
        data = base64.b64encode(plot_png.read_bytes()).decode()
        lines += ["", f"![optimization plot](data:image/png;base64,{data})"]
    return "\n".join(lines) + "\n"


def _label_positions(ax, points: list[tuple[float, float]]) -> list[tuple[int, int]]:
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


def plot(report: SearchReport, path: Path) -> list[Any]:
    """Write the optimization plot (PNG); returns the point labels (matplotlib Text objects, for tests)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials: list[TrialResult] = report.trials
    rows_h = 0.3 * (len(trials) + 1)  # inches for the table under the plot
    fig, (ax, table) = plt.subplots(
        2, 1, figsize=(7.5, 4.6 + rows_h), dpi=110, height_ratios=[4.2, rows_h], layout="constrained"
    )
    xs = [t.throughput_ips_b64 for t in trials]
    ys = [t.val_accuracy for t in trials]
    biggest = max(t.size_bytes for t in trials)
    areas = [40 + 560 * t.size_bytes / biggest for t in trials]
    colours = ["tab:green" if t.within_budget else "tab:red" for t in trials]
    ax.scatter(xs, ys, s=areas, c=colours, alpha=0.55, edgecolors="black", linewidths=0.6, zorder=3)
    front = [report.trial(k) for k in report.pareto]
    ax.step(
        [t.throughput_ips_b64 for t in front], [t.val_accuracy for t in front], where="post", color="tab:blue",
        linewidth=1.4, label="Pareto front", zorder=2,
    )  # fmt: skip
    floor = report.teacher_val_accuracy - report.budget_points / 100
    ax.axhline(
        floor, color="grey", linestyle="--", linewidth=1, label=f"budget ({report.budget_points:g} points)"
    )
    ax.axhline(report.teacher_val_accuracy, color="black", linestyle=":", linewidth=1, label="teacher")
    chosen = report.trial(report.chosen)
    ax.scatter(
        [chosen.throughput_ips_b64], [chosen.val_accuracy], s=areas[trials.index(chosen)] + 260,
        facecolors="none", edgecolors="gold", linewidths=2.5, label=f"chosen: {chosen.key}", zorder=4,
    )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("throughput, images/s at batch 64 (ONNX Runtime FP32, log scale)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Compression search: marker area = model size")
    ax.grid(True, alpha=0.3)
    lo = min([*ys, floor]) - 0.01
    hi = max([*ys, report.teacher_val_accuracy]) + 0.01
    ax.set_ylim(lo, hi)
    ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    labels = []
    for i, (offset, x, y) in enumerate(
        zip(_label_positions(ax, list(zip(xs, ys, strict=True))), xs, ys, strict=True)
    ):
        labels.append(
            ax.annotate(
                str(i + 1),
                (x, y),
                xytext=offset,
                textcoords="offset points",
                ha="center",
                va="center",
                fontsize=9,
                fontweight="bold",
                zorder=5,
            )
        )
    rows = [
        [
            str(i),
            t.key + (" (chosen)" if t.key == report.chosen else ""),
            f"{t.params:,}",
            f"{t.size_bytes / 1024:.1f}",
            f"{t.val_accuracy:.4f}",
            f"{t.drop_points:+.2f}",
            f"{t.throughput_ips_b64:,.0f}",
        ]
        for i, t in enumerate(trials, 1)
    ]
    table.axis("off")
    table.table(
        cellText=rows,
        colLabels=["#", "candidate", "params", "KiB", "val acc", "drop pts", "img/s"],
        loc="upper center",
        cellLoc="center",
    ).auto_set_font_size(True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return labels

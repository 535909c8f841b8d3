"""The compression search's report for people: a Markdown table and the optimization plot.

The plot is the trade-off plot (compression/tradeoff.py) of the candidates' validation accuracy against
throughput, with the teacher's accuracy and the budget's floor drawn across it; over-budget candidates are red.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from slipway.compression import tradeoff
from slipway.compression.search import SearchReport, TrialResult, point_of


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


def plot(report: SearchReport, path: Path) -> list[Any]:
    """Write the optimization plot (PNG); returns the point labels (matplotlib Text objects, for tests)."""
    import matplotlib.pyplot as plt

    trials: list[TrialResult] = report.trials
    fig, [(ax, table)] = tradeoff.figure(panels=1, table_rows=len(trials))
    labels = tradeoff.draw(
        ax,
        [point_of(t) for t in trials],
        chosen=report.chosen,
        references=[
            tradeoff.Reference(
                report.teacher_val_accuracy - report.budget_points / 100,
                f"budget ({report.budget_points:g} points)", "--", "grey",
            ),
            tradeoff.Reference(report.teacher_val_accuracy, "teacher"),
        ],
        xlabel="throughput, images/s at batch 64 (ONNX Runtime FP32, log scale)",
        ylabel="validation accuracy",
        title="Compression search: marker area = model size, red = over budget",
    )  # fmt: skip
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
    tradeoff.key_table(table, ["#", "candidate", "params", "KiB", "val acc", "drop pts", "img/s"], rows)
    fig.savefig(path, format="png")
    plt.close(fig)
    return labels

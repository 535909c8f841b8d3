"""Figures of attributions for people, for any input rank: images (C, H, W) as heatmaps, signals (C, L) as line
plots of the signal with its attribution, tabular rows (F,) as bar charts of the top features.

One layout for every use: a row per item (a class, an example, an input row) and a panel per attribution map
(teacher and student, or one per method), each map scaled to its own largest magnitude so that maps of
different models and methods compare by shape, not by scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

TOP_FEATURES = 10  # bars per tabular row
DPI = 80  # small files: the KFP Markdown view inlines them


def _scaled(a: np.ndarray) -> np.ndarray:
    top = float(np.abs(a).max())
    return a / top if top > 0 else a


def _image(x: np.ndarray) -> np.ndarray:
    """(C, H, W) -> what imshow takes: RGB in [0, 1] for three channels, else the channel mean."""
    if x.shape[0] == 3:
        lo, hi = float(x.min()), float(x.max())
        return np.transpose((x - lo) / (hi - lo) if hi > lo else x * 0, (1, 2, 0))
    return x.mean(axis=0)


def plot_rows(
    path: Path,
    inputs: np.ndarray,
    panels: dict[str, np.ndarray],
    row_labels: Sequence[str],
    title: str,
    feature_names: Sequence[str] | None = None,
) -> Path:
    """One figure: a row per item of `inputs` (R, *shape), with each of `panels` (name -> (R, *shape) maps).

    Images: the input, then |attribution| summed over channels per panel. Signals: the input's channels in grey
    with each panel's |attribution| (summed over channels) on a second axis. Tabular: signed attributions of
    the TOP_FEATURES features with the largest magnitude in any panel, one bar per panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rank = inputs.ndim - 1
    rows = len(inputs)
    names = list(panels)
    if rank == 3:
        cols = 1 + len(names)
        fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows + 0.6), dpi=DPI, squeeze=False)
        for r in range(rows):
            axes[r, 0].imshow(_image(inputs[r]), cmap="gray")
            axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
            for c, name in enumerate(names, 1):
                heat = _scaled(np.abs(panels[name][r]).sum(axis=0))
                axes[r, c].imshow(heat, cmap="inferno", vmin=0, vmax=1)
            for ax in axes[r]:
                ax.set_xticks([])
                ax.set_yticks([])
        for c, name in enumerate(["input", *names]):
            axes[0, c].set_title(name, fontsize=8)
    elif rank == 2:
        fig, axes = plt.subplots(rows, 1, figsize=(7.5, 1.6 * rows + 0.6), dpi=DPI, squeeze=False)
        colours = plt.get_cmap("tab10")
        for r in range(rows):
            ax = axes[r, 0]
            for channel in inputs[r]:
                ax.plot(channel, color="0.6", linewidth=0.9)
            ax.set_ylabel(row_labels[r], fontsize=8)
            ax.tick_params(labelsize=7)
            twin = ax.twinx()
            for c, name in enumerate(names):
                line = _scaled(np.abs(panels[name][r]).sum(axis=0))
                twin.plot(line, color=colours(c), linewidth=1.2, label=name)
            twin.set_ylim(0, 1.05)
            twin.tick_params(labelsize=7)
            if r == 0:
                twin.legend(fontsize=7, loc="upper right")
        axes[-1, 0].set_xlabel(
            "position (grey: the input; lines: |attribution|, each scaled to 1)", fontsize=8
        )
    elif rank == 1:
        fig, axes = plt.subplots(rows, 1, figsize=(7.5, 1.8 * rows + 0.6), dpi=DPI, squeeze=False)
        colours = plt.get_cmap("tab10")
        width = 0.8 / max(1, len(names))
        features = inputs.shape[1]
        labels = list(feature_names) if feature_names is not None else [f"f{i}" for i in range(features)]
        for r in range(rows):
            ax = axes[r, 0]
            scaled = {name: _scaled(panels[name][r]) for name in names}
            strength = np.max([np.abs(v) for v in scaled.values()], axis=0)
            top = np.argsort(-strength, kind="stable")[:TOP_FEATURES]
            where = np.arange(len(top))
            for c, name in enumerate(names):
                ax.bar(where + c * width, scaled[name][top], width, color=colours(c), label=name)
            ax.set_xticks(where + width * (len(names) - 1) / 2, [labels[i] for i in top], fontsize=7)
            ax.axhline(0, color="0.5", linewidth=0.6)
            ax.set_ylabel(row_labels[r], fontsize=8)
            ax.tick_params(axis="y", labelsize=7)
            if r == 0:
                ax.legend(fontsize=7, loc="upper right")
        axes[-1, 0].set_xlabel("top features (attribution, each panel scaled to 1)", fontsize=8)
    else:
        raise ValueError(
            f"plot_rows: expected inputs of shape (R, F), (R, C, L) or (R, C, H, W); got {inputs.shape}"
        )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path

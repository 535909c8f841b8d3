"""Evaluation: quality metrics, confusion matrix, and CPU latency/throughput measured in-process.

Latency: per-call p50/p99 at batch 1; throughput: images/s at batch 64. Each is the median over repeats
taken after a warm-up, so one noisy repeat on a shared machine does not decide a gate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from slipway.core.config import EvaluateConfig

Predict = Callable[[np.ndarray], np.ndarray]


class QualityMetrics(BaseModel):
    accuracy: float
    macro_f1: float
    per_class_accuracy: list[float]
    confusion_matrix: list[list[int]]


class SpeedMetrics(BaseModel):
    latency_ms_p50_b1: float
    latency_ms_p99_b1: float
    throughput_ips_b64: float


class ModelEvaluation(BaseModel):
    """What the gate, the registry and summary.json need to know about one model in one runtime."""

    role: str
    format: str
    runtime: str
    params: int
    size_bytes: int
    accuracy: float
    macro_f1: float
    per_class_accuracy: list[float]
    confusion_matrix: list[list[int]]
    latency_ms_p50_b1: float
    latency_ms_p99_b1: float
    throughput_ips_b64: float


def quality(y_true: np.ndarray, logits: np.ndarray, num_classes: int) -> QualityMetrics:
    from sklearn.metrics import confusion_matrix, f1_score  # 1.5 s to import: only steps that evaluate pay it

    y_pred = logits.argmax(1)
    labels = list(range(num_classes))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(1)
    per_class = [float(cm[i, i] / support[i]) if support[i] else 0.0 for i in labels]
    return QualityMetrics(
        accuracy=float((y_pred == y_true).mean()),
        macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        per_class_accuracy=per_class,
        confusion_matrix=cm.tolist(),
    )


def _tile(x: np.ndarray, n: int) -> np.ndarray:
    reps = -(-n // len(x))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:n])


def measure_speed(predict: Predict, x: np.ndarray, cfg: EvaluateConfig) -> SpeedMetrics:
    """Median over `cfg.repeats` of batch-1 p50/p99 latency and batch-64 throughput."""
    one = [np.ascontiguousarray(x[i : i + 1]) for i in range(min(len(x), 64))]
    batch = _tile(x, 64)
    for i in range(cfg.warmup):
        predict(one[i % len(one)])
        predict(batch)
    p50s, p99s, rates = [], [], []
    for _ in range(cfg.repeats):
        times = np.empty(cfg.latency_iterations)
        for i in range(cfg.latency_iterations):
            start = time.perf_counter()
            predict(one[i % len(one)])
            times[i] = time.perf_counter() - start
        p50s.append(float(np.percentile(times, 50)) * 1e3)
        p99s.append(float(np.percentile(times, 99)) * 1e3)
        start = time.perf_counter()
        for _ in range(cfg.throughput_iterations):
            predict(batch)
        rates.append(64 * cfg.throughput_iterations / (time.perf_counter() - start))
    return SpeedMetrics(
        latency_ms_p50_b1=float(np.median(p50s)),
        latency_ms_p99_b1=float(np.median(p99s)),
        throughput_ips_b64=float(np.median(rates)),
    )


def onnx_predictor(path: str | Path, threads: int | None) -> Predict:
    from slipway.compression.onnx_export import ort_session

    session = ort_session(path, threads)
    name = session.get_inputs()[0].name
    dtype = np.float16 if "float16" in session.get_inputs()[0].type else np.float32
    return lambda x: session.run(None, {name: x.astype(dtype, copy=False)})[0]


def torch_predictor(model, threads: int | None) -> Predict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    model.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return predict


def predict_batched(predict: Predict, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Logits for every row, `batch` rows per call (the test split at once may not fit a runtime's limits)."""
    return np.concatenate([predict(np.ascontiguousarray(x[i : i + batch])) for i in range(0, len(x), batch)])


def evaluate_model(
    role: str,
    fmt: str,
    runtime: str,
    predict: Predict,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    params: int,
    size_bytes: int,
    cfg: EvaluateConfig,
) -> ModelEvaluation:
    q = quality(y, predict_batched(predict, x).astype(np.float32), num_classes)
    s = measure_speed(predict, x, cfg)
    return ModelEvaluation(
        role=role,
        format=fmt,
        runtime=runtime,
        params=params,
        size_bytes=size_bytes,
        **q.model_dump(),
        **s.model_dump(),
    )


def confusion_error_cells(cm: list[list[int]] | np.ndarray) -> np.ndarray:
    """The misclassified cells (off the diagonal, count > 0): what the confusion plot highlights."""
    arr = np.asarray(cm)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"confusion matrix: expected a square 2-D matrix, got shape {arr.shape}")
    return (arr > 0) & ~np.eye(len(arr), dtype=bool)


def plot_confusion_matrix(cm: list[list[int]], path: str | Path, title: str) -> None:
    """Counts in every non-empty cell; correct cells in blue, errors in red, each shaded by its share of the
    true class's row, so a confusion stands out even when it is a few samples among hundreds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    arr = np.asarray(cm)
    n = len(arr)
    errors = confusion_error_cells(arr)
    diagonal = np.eye(n, dtype=bool)
    share = arr / np.maximum(arr.sum(axis=1, keepdims=True), 1)
    worst = float(share[errors].max()) if errors.any() else 1.0
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * n + 2.5), max(4.5, 0.5 * n + 1.5)), dpi=100)
    ax.imshow(np.ma.masked_where(~diagonal, share), cmap="Blues", vmin=0, vmax=1)
    # errors from a visible pink (Reds without its near-white start) to the darkest red for the worst confusion
    reds = ListedColormap(plt.get_cmap("Reds")(np.linspace(0.25, 1.0, 256)))
    error_im = ax.imshow(np.ma.masked_where(~errors, share), cmap=reds, vmin=0, vmax=worst)
    ax.set(xlabel="predicted", ylabel="true (blue: correct)", title=title, xticks=range(n), yticks=range(n))
    ax.set_xticks(np.arange(-0.5, n), minor=True)
    ax.set_yticks(np.arange(-0.5, n), minor=True)
    ax.grid(which="minor", color="0.85", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    fontsize = 8 if n <= 10 else 6
    for (i, j), count in np.ndenumerate(arr):
        if count == 0 and i != j:
            continue  # empty error cells stay blank: the eye goes to the ones that are not
        dark = share[i, j] > (0.6 if i == j else 0.55 * worst)
        colour = "white" if dark else "black"
        ax.text(j, i, str(count), ha="center", va="center", fontsize=fontsize, color=colour)
    fig.colorbar(error_im, ax=ax, fraction=0.046, pad=0.04, label="errors (red): share of the true class")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)

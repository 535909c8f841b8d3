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
from sklearn.metrics import confusion_matrix, f1_score

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
    logits = np.concatenate([predict(np.ascontiguousarray(x[i : i + 256])) for i in range(0, len(x), 256)])
    q = quality(y, logits.astype(np.float32), num_classes)
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


def plot_confusion_matrix(cm: list[list[int]], path: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    im = ax.imshow(arr, cmap="Blues")
    ax.set(xlabel="predicted", ylabel="true", title=title, xticks=range(len(arr)), yticks=range(len(arr)))
    for (i, j), v in np.ndenumerate(arr):
        ax.text(
            j,
            i,
            str(v),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if v > arr.max() / 2 else "black",
        )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)

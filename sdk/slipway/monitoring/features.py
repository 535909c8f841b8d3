"""Turn model inputs and outputs into a small table of drift features.

Drift tests on raw pixels are many, correlated and weak; a few summary statistics per channel catch the
shifts that matter in practice (brightness, contrast, noise, blur) with one test each. Tabular inputs are
already features and are compared column by column.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from slipway.core.errors import DataError

PRED_CLASS = "pred_class"
CONFIDENCE = "confidence"
ENTROPY = "entropy"
OUTPUT_COLUMNS = (PRED_CLASS, CONFIDENCE, ENTROPY)
CATEGORICAL_OUTPUT_COLUMNS = (PRED_CLASS,)
CHANNEL_STATS = ("mean", "std", "min", "max", "p10", "p90", "grad_energy")


def input_kind(x: np.ndarray) -> str:
    """Name the layout of a batch: tabular (N, F), signal (N, C, L) or image (N, C, H, W)."""
    kinds = {2: "tabular", 3: "signal", 4: "image"}
    if x.ndim not in kinds:
        raise DataError(
            f"inputs: expected shape (N, F), (N, C, L) or (N, C, H, W), got {x.shape}; "
            "reshape the samples to one of these layouts"
        )
    return kinds[x.ndim]


def input_features(x: np.ndarray, column_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Compute drift features for a batch of inputs: tabular columns as-is, per-channel statistics otherwise."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"inputs: expected numbers, got dtype {arr.dtype}")
    kind = input_kind(arr)
    # images stay float32 (half the memory traffic of float64 on 10,000-row windows); tabular columns float64
    arr = arr.astype(np.float64 if kind == "tabular" else np.float32, copy=False)
    if kind == "tabular":
        names = list(column_names) if column_names is not None else [f"f{i}" for i in range(arr.shape[1])]
        if len(names) != arr.shape[1]:
            raise DataError(f"column names: {len(names)} names for {arr.shape[1]} columns")
        return pd.DataFrame(arr, columns=names)
    n, c = arr.shape[0], arr.shape[1]
    flat = arr.reshape(n, c, -1)
    columns: dict[str, np.ndarray] = {}
    if flat.shape[2] == 0:
        raise DataError(f"inputs: samples of shape {arr.shape[1:]} have no values")
    p10, p90 = np.percentile(flat, [10.0, 90.0], axis=2) if n else (np.zeros((0, c)), np.zeros((0, c)))
    if kind == "image":
        gh = np.diff(arr, axis=2) if arr.shape[2] > 1 else np.zeros((n, c, 1, 1))
        gw = np.diff(arr, axis=3) if arr.shape[3] > 1 else np.zeros((n, c, 1, 1))
        grad = (gh**2).reshape(n, c, -1).mean(axis=2) + (gw**2).reshape(n, c, -1).mean(axis=2)
    else:
        gl = np.diff(arr, axis=2) if arr.shape[2] > 1 else np.zeros((n, c, 1))
        grad = (gl**2).reshape(n, c, -1).mean(axis=2)
    stats = {
        "mean": flat.mean(axis=2),
        "std": flat.std(axis=2),
        "min": flat.min(axis=2) if n else np.zeros((0, c)),
        "max": flat.max(axis=2) if n else np.zeros((0, c)),
        "p10": p10,
        "p90": p90,
        "grad_energy": grad,
    }
    for ch in range(c):
        for stat in CHANNEL_STATS:
            columns[f"c{ch}_{stat}"] = stats[stat][:, ch].astype(np.float64)
    return pd.DataFrame(columns)


def as_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Return softmax probabilities: rows that already are distributions pass through, logits are softmaxed."""
    arr = np.asarray(outputs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise DataError(f"outputs: expected (N, K) scores with K >= 2, got shape {arr.shape}")
    finite = np.asarray(np.isfinite(arr).all(axis=1))
    clean = np.where(finite[:, None], arr, 0.0)
    looks_like_probs: np.ndarray = (
        (clean >= 0).all(axis=1) & (clean <= 1).all(axis=1) & (np.abs(clean.sum(axis=1) - 1) < 1e-3)
    )
    soft = np.exp(clean - clean.max(axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    probs: np.ndarray = np.where(looks_like_probs[:, None], clean, soft)
    probs[~finite] = np.nan
    return probs


def output_features(outputs: np.ndarray) -> pd.DataFrame:
    """Predicted class (categorical), top-1 confidence and entropy; rows of NaN (no response seen) stay NaN."""
    probs = as_probabilities(outputs)
    missing = ~np.isfinite(probs).all(axis=1)
    safe = np.where(missing[:, None], 1.0 / probs.shape[1], probs)
    pred = safe.argmax(axis=1)
    conf = safe.max(axis=1)
    ent = -(safe * np.log(np.clip(safe, 1e-12, 1.0))).sum(axis=1)
    pred_col = pd.Series(pred.astype(str), dtype=object)
    pred_col[missing] = None
    return pd.DataFrame(
        {
            PRED_CLASS: pred_col,
            CONFIDENCE: np.where(missing, np.nan, conf),
            ENTROPY: np.where(missing, np.nan, ent),
        }
    )


def predicted_classes(outputs: np.ndarray) -> np.ndarray:
    """Argmax class per row, -1 where the row has no (finite) outputs."""
    probs = as_probabilities(outputs)
    missing = ~np.isfinite(probs).all(axis=1)
    pred = np.where(missing[:, None], 0.0, probs).argmax(axis=1)
    return np.where(missing, -1, pred).astype(np.int64)

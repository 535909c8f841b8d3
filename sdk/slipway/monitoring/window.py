"""Assemble a window of captured rows from the store, and read/write sample files (NPZ, CSV, Parquet).

A row is one sample of a request's input tensor. Its model output (from the response event with the same
inference id) and label (from feedback) are joined by id when they were captured; otherwise they are NaN/-1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from slipway.core.errors import DataError, NotFoundError
from slipway.monitoring.events import decode_payload
from slipway.monitoring.store import iter_records_newest_first

logger = logging.getLogger(__name__)

LABEL_COLUMNS = ("y", "label")
PROB_PREFIX = "prob_"


@dataclass
class Samples:
    """Inputs with optional labels (-1 = unknown), model probabilities (NaN row = no response), ids, and the
    model name and version of each row's request ("" = unknown)."""

    x: np.ndarray
    y: np.ndarray | None = None
    probs: np.ndarray | None = None
    column_names: list[str] | None = None
    ids: np.ndarray | None = None
    model_names: np.ndarray | None = None
    model_versions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)


def _pick(tensors: list[dict], name: str | None) -> dict | None:
    if name is None:
        return tensors[0] if tensors else None
    return next((t for t in tensors if t.get("name") == name), None)


def collect_window(
    data_dir: str | Path,
    last_n: int,
    input_name: str | None = None,
    output_name: str | None = None,
    sample_shape: tuple[int, ...] | None = None,
) -> Samples:
    """The last `last_n` captured rows, oldest first, joined with responses and feedback by inference id.

    Rows whose per-sample shape differs from `sample_shape` (default: the newest request's) are skipped, so a
    window never mixes tensors of different models.
    """
    if last_n < 1:
        raise DataError("last_n must be >= 1")
    chunks: list[tuple[str, np.ndarray]] = []
    models: list[tuple[str, str]] = []  # (name, version) of each chunk's request; "" when unknown
    outputs: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    rows = skipped = 0
    for record in iter_records_newest_first(Path(data_dir)):
        try:
            header, body = decode_payload(record.payload)
            kind, event_id = header["k"], header["id"]
            if kind == "feedback":
                labels.setdefault(event_id, np.asarray(header["labels"], dtype=np.int64))
                continue
            tensors = body["inputs" if kind == "request" else "outputs"] if body else []
            tensor = _pick(tensors, input_name if kind == "request" else output_name)
            if tensor is None:
                continue
            arr = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            logger.warning("window: unreadable record skipped", extra={"key": record.key, "error": str(exc)})
            continue
        if kind == "response":
            outputs.setdefault(event_id, arr)
            continue
        if arr.ndim < 2:
            arr = arr.reshape(-1, 1)
        if sample_shape is None:
            sample_shape = tuple(arr.shape[1:])
        if tuple(arr.shape[1:]) != sample_shape:
            skipped += len(arr)
            continue
        chunks.append((event_id, arr))
        models.append((header.get("model_name") or "", header.get("model_version") or ""))
        rows += len(arr)
        if rows >= last_n:
            break
    if not chunks:
        raise NotFoundError(f"no captured requests in {data_dir}: send events first")
    if skipped:
        logger.info("window: rows of another shape skipped", extra={"skipped": skipped})
    chunks.reverse()
    models.reverse()
    x = np.concatenate([c[1] for c in chunks])[-last_n:]
    ids = np.concatenate([np.full(len(c[1]), c[0], dtype=object) for c in chunks])[-last_n:]
    counts = [len(arr) for _, arr in chunks]
    names = np.repeat([m[0] for m in models], counts)[-last_n:]
    versions = np.repeat([m[1] for m in models], counts)[-last_n:]
    probs = _join_outputs(chunks, outputs)
    y = _join_labels(chunks, labels)
    return Samples(
        x=x,
        y=None if y is None else y[-last_n:],
        probs=None if probs is None else probs[-last_n:],
        ids=ids.astype(str),
        model_names=names.astype(str),
        model_versions=versions.astype(str),
    )


def _join_outputs(chunks: list[tuple[str, np.ndarray]], outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    widths = {o.shape[1] for o in outputs.values() if o.ndim == 2}
    if len(widths) != 1:
        return None
    width = widths.pop()
    parts = []
    for event_id, arr in chunks:
        out = outputs.get(event_id)
        if out is None or out.shape != (len(arr), width):
            out = np.full((len(arr), width), np.nan, dtype=np.float32)
        parts.append(out)
    return np.concatenate(parts).astype(np.float32)


def _join_labels(chunks: list[tuple[str, np.ndarray]], labels: dict[str, np.ndarray]) -> np.ndarray | None:
    if not labels:
        return None
    parts = []
    for event_id, arr in chunks:
        lab = labels.get(event_id)
        parts.append(
            lab if lab is not None and len(lab) == len(arr) else np.full(len(arr), -1, dtype=np.int64)
        )
    return np.concatenate(parts)


def save_samples(samples: Samples, out_path: str | Path) -> Path:
    """Write samples as NPZ (`x`, optional `y`, `probs`, `ids`) or, for tabular `x`, CSV/Parquet."""
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in {".csv", ".parquet"}:
        if samples.x.ndim != 2:
            raise DataError(f"{path.name}: CSV/Parquet hold tabular (N, F) rows only; use .npz")
        frame = pd.DataFrame(
            samples.x, columns=samples.column_names or [f"f{i}" for i in range(samples.x.shape[1])]
        )
        if samples.probs is not None:
            for k in range(samples.probs.shape[1]):
                frame[f"{PROB_PREFIX}{k}"] = samples.probs[:, k]
        if samples.y is not None:
            frame["y"] = samples.y
        frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path, index=False)
        return path
    arrays: dict[str, np.ndarray] = {"x": samples.x.astype(np.float32)}
    if samples.y is not None:
        arrays["y"] = samples.y.astype(np.int64)
    if samples.probs is not None:
        arrays["probs"] = samples.probs.astype(np.float32)
    if samples.ids is not None:
        arrays["ids"] = samples.ids.astype(str)
    if samples.model_names is not None:
        arrays["model_names"] = samples.model_names.astype(str)
    if samples.model_versions is not None:
        arrays["model_versions"] = samples.model_versions.astype(str)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    return path


def load_samples(path: str | Path) -> Samples:
    """Read a reference or window file: NPZ (`x`, optional `y`, `probs`), CSV or Parquet (tabular)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such file")
    if path.suffix in {".csv", ".parquet"}:
        try:
            frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: cannot read ({exc})") from exc
        label = next((c for c in LABEL_COLUMNS if c in frame.columns), None)
        prob_cols = [c for c in frame.columns if str(c).startswith(PROB_PREFIX)]
        feature_cols = [c for c in frame.columns if c != label and c not in prob_cols]
        bad = [c for c in feature_cols if not pd.api.types.is_numeric_dtype(frame[c])]
        if bad:
            raise DataError(f"{path}: non-numeric feature columns {bad[:5]}; encode them as numbers first")
        return Samples(
            x=frame[feature_cols].to_numpy(np.float32),
            y=frame[label].to_numpy(np.int64) if label else None,
            probs=frame[prob_cols].to_numpy(np.float32) if prob_cols else None,
            column_names=[str(c) for c in feature_cols],
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data:
                raise DataError(f"{path}: NPZ needs an array named 'x' (found {sorted(data.files)})")
            return Samples(
                x=data["x"],
                y=data.get("y"),
                probs=data.get("probs"),
                ids=data.get("ids"),
                model_names=data.get("model_names"),
                model_versions=data.get("model_versions"),
            )
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable NPZ file ({exc})") from exc


def export_window(
    data_dir: str | Path,
    out_path: str | Path,
    last_n: int,
    input_name: str | None = None,
    output_name: str | None = None,
) -> Path:
    """Pipeline step: dump the store's last `last_n` rows as a window file for `detect_drift`."""
    samples = collect_window(data_dir, last_n, input_name, output_name)
    path = save_samples(samples, out_path)
    logger.info("window exported", extra={"rows": len(samples), "path": str(path)})
    return path

"""The data step: load and split the data, save the drift reference, open the pipeline run's MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from slipway import registry
from slipway.core import data as data_lib
from slipway.core.config import SlipwayConfig


class DataInfo(BaseModel):
    run_id: str
    fingerprint: str
    input_shape: list[int]
    num_classes: int
    samples: dict[str, int]


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value
    return out


def prepare_data(cfg: SlipwayConfig, run_key: str, dataset_path: Path, reference_path: Path) -> DataInfo:
    """Load and split the data, save the splits and the drift reference, open the MLflow run."""
    splits = data_lib.load_dataset(cfg.data, cfg.seed)
    data_lib.save_splits(splits, dataset_path)
    data_lib.save_reference(splits, reference_path, cfg.data.reference_samples, cfg.seed)
    params = _flatten("", cfg.model_dump(mode="json"), {})
    run_id = registry.start_run(cfg.registry, run_key, cfg.registry.artifact_location, params)
    registry.set_tags(
        cfg.registry,
        run_id,
        {"slipway.dataset_fingerprint": splits.fingerprint, "slipway.dataset": splits.name},
    )
    samples = {s: len(splits.split(s)[1]) for s in data_lib.SPLITS}
    registry.log_metrics(cfg.registry, run_id, {f"data.{k}_samples": v for k, v in samples.items()})
    return DataInfo(
        run_id=run_id,
        fingerprint=splits.fingerprint,
        input_shape=list(splits.input_shape),
        num_classes=splits.num_classes,
        samples=samples,
    )

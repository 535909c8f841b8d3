"""The data step: load and split the data and save the drift reference (cached: no MLflow, no run id)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from slipway.core import data as data_lib
from slipway.core.config import SlipwayConfig


class DataInfo(BaseModel):
    name: str
    fingerprint: str
    input_shape: list[int]
    num_classes: int
    samples: dict[str, int]
    groups: dict[str, list[str]] = {}  # sensitive feature -> its groups (test split), for the fairness report


def prepare_data(cfg: SlipwayConfig, dataset_path: Path, reference_path: Path) -> DataInfo:
    """Load and split the data, save the splits and the drift reference sample."""
    from slipway.cluster.storage import download

    splits = data_lib.load_dataset(cfg.data, cfg.seed, download=download)
    data_lib.save_splits(splits, dataset_path)
    data_lib.save_reference(splits, reference_path, cfg.data.reference_samples, cfg.seed)
    return DataInfo(
        name=splits.name,
        fingerprint=splits.fingerprint,
        input_shape=list(splits.input_shape),
        num_classes=splits.num_classes,
        samples={s: len(splits.split(s)[1]) for s in data_lib.SPLITS},
        groups={name: sorted(set(labels)) for name, labels in splits.groups_of("test").items()},
    )

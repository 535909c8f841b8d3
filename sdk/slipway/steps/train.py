"""The training steps: train the teacher, distil the student, in this process or on local DDP workers.

Cached steps: they log progress to the task's log and return their numbers (history included) for the
model's metadata; the record step puts them into the pipeline run's MLflow run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from slipway.core import data as data_lib
from slipway.core.config import DistributedConfig, LoopConfig, ModelSpec, SlipwayConfig, validate_config
from slipway.core.models import build_model, count_parameters, load_model, save_model
from slipway.training import distributed
from slipway.training.loop import TrainResult, train


def checkpoint_dir(cfg: LoopConfig, role: str, fingerprint: str, spec: ModelSpec, fallback: Path) -> Path:
    """A stable folder per (data, model, training config): rerunning the same work resumes from it."""
    if cfg.checkpoint_dir is None:
        return fallback
    key = json.dumps(
        [fingerprint, spec.model_dump(), cfg.model_dump(exclude={"checkpoint_dir"})], sort_keys=True
    )
    return Path(cfg.checkpoint_dir) / f"{role}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _fit(
    cfg: SlipwayConfig,
    role: str,
    dataset_path: Path,
    model_path: Path,
    teacher_path: Path | None,
) -> TrainResult:
    """Train (or distil) in this process, or on `workers` local DDP processes under torchrun."""
    train_cfg = cfg.train if teacher_path is None else cfg.distill
    if train_cfg.workers > 1 and not distributed.launched_by_torchrun():
        payload = distributed.launch(
            "slipway.steps.train:fit_worker",
            {
                "config": cfg.model_dump(mode="json"),
                "role": role,
                "dataset_path": str(dataset_path),
                "model_path": str(model_path),
                "teacher_path": None if teacher_path is None else str(teacher_path),
                "device": train_cfg.device,
            },
            train_cfg.workers,
            threads_per_process=train_cfg.num_threads or 1,
        )
        return TrainResult(**payload)
    return fit_in_process(cfg, role, dataset_path, model_path, teacher_path)


def fit_worker(
    config: dict[str, Any],
    role: str,
    dataset_path: str,
    model_path: str,
    teacher_path: str | None,
    device: str,
) -> dict[str, Any]:
    """One torchrun rank of `_fit` (called by slipway.training.worker); returns the result as JSON."""
    del device  # the worker joined the process group with it already
    result = fit_in_process(
        validate_config(config),
        role,
        Path(dataset_path),
        Path(model_path),
        None if teacher_path is None else Path(teacher_path),
    )
    return dataclasses.asdict(result)


def fit_in_process(
    cfg: SlipwayConfig,
    role: str,
    dataset_path: Path,
    model_path: Path,
    teacher_path: Path | None,
) -> TrainResult:
    """The training step proper; under DDP every rank runs it and rank 0 alone writes the model."""
    splits = data_lib.load_splits(dataset_path)
    spec, train_cfg = (cfg.teacher, cfg.train) if teacher_path is None else (cfg.student, cfg.distill)
    torch.manual_seed(cfg.seed)
    model = build_model(spec, splits.input_shape, splits.num_classes)
    teacher = load_model(teacher_path)[0] if teacher_path is not None else None
    # How many processes train, and on how many threads, changes nothing in the math: the checkpoint folder
    # ignores it, so a run resumes at another world size.
    resumable = train_cfg.model_copy(
        update={"workers": 1, "num_threads": None, "distributed": DistributedConfig.model_validate({})}
    )
    ckpt = checkpoint_dir(
        resumable, role, splits.fingerprint, spec, model_path.parent / f"{role}-checkpoints"
    )
    is_main = distributed.current(train_cfg.device).is_main
    result = train(
        model,
        splits.x_train,
        splits.y_train,
        splits.x_val,
        splits.y_val,
        train_cfg,
        cfg.seed,
        ckpt,
        teacher=teacher,
        label=role,
    )
    if not is_main:
        return result
    save_model(model, spec, splits.input_shape, splits.num_classes, model_path)
    return result


def training_metadata(role: str, result: TrainResult | dict[str, Any], model_path: Path) -> dict[str, Any]:
    """What the model artifact carries for the record step: the outcome, the history, the parameter count."""
    outcome = dataclasses.asdict(result) if isinstance(result, TrainResult) else dict(result)
    return {
        "framework": "pytorch",
        "role": role,
        **{k: outcome[k] for k in ("best_val_accuracy", "best_epoch", "epochs_run", "history")},
        "params": count_parameters(load_model(model_path)[0]),
    }


def train_teacher(cfg: SlipwayConfig, dataset_path: Path, model_path: Path) -> TrainResult:
    return _fit(cfg, "teacher", dataset_path, model_path, None)


def distill_student(
    cfg: SlipwayConfig, dataset_path: Path, teacher_path: Path, model_path: Path
) -> TrainResult:
    return _fit(cfg, "student", dataset_path, model_path, teacher_path)

"""The drift pipeline's last step: run the training pipeline again, on the training data plus labelled traffic.

What runs is the training pipeline as compiled with its own config (`monitor.retrain_package`), so a retrain
trains, gates, registers and deploys exactly as the original run did, on a new dataset: the original training
and validation rows plus the labelled captured rows (feedback joined by inference id), with the original test
split kept and a held-out part of the labelled rows as the gate's `recent` split. Locally it runs with
kfp.local (`slipway run` in a subprocess); in a cluster it is submitted to Kubeflow Pipelines.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from slipway.core import run_parameters
from slipway.core.config import SlipwayConfig, apply_overrides, to_parameter, validate_config
from slipway.core.errors import ConfigError, DataError, TrainingError

log = logging.getLogger(__name__)
PIPELINE_PREFIX = "slipway-"  # compiled pipelines are named slipway-<pipeline>


def read_package(path: Path) -> tuple[str, dict[str, Any], list[str]]:
    """A compiled pipeline's name, its compiled-in `config` and the names of its parameters."""
    try:
        spec = next(yaml.safe_load_all(path.read_text()))
        name = spec["pipelineInfo"]["name"]
        parameters = spec["root"]["inputDefinitions"]["parameters"]
        config = parameters["config"]["defaultValue"]
    except (yaml.YAMLError, StopIteration, KeyError, TypeError) as err:
        raise ConfigError(
            f"monitor.retrain_package: {path} is not a pipeline compiled by `slipway compile` ({err!r})"
        ) from None
    if not name.startswith(PIPELINE_PREFIX) or not isinstance(config, dict):
        raise ConfigError(f"monitor.retrain_package: {path} holds pipeline {name!r}, not a Slipway pipeline")
    return name.removeprefix(PIPELINE_PREFIX), config, list(parameters)


def retrain_dataset(
    training: SlipwayConfig, window: Path, out: Path, min_labels: int, recent_fraction: float
):
    """Write the retraining NPZ at `out`; returns its row counts, or None when the window has too few labels.

    `x, y`: the original train and validation rows plus the labelled rows not held out; `x_test, y_test`: the
    original test split; `x_recent, y_recent`: the held-out labelled rows.
    """
    from sklearn.model_selection import train_test_split

    from slipway.core.data import load_dataset
    from slipway.monitoring.window import load_samples

    samples = load_samples(window)
    y = np.full(len(samples), -1, np.int64) if samples.y is None else samples.y  # -1: no feedback
    labelled = y >= 0
    count = int(labelled.sum())
    if count < min_labels:
        log.info(
            "retrain skipped: %d labelled rows in the window, monitor.min_labels is %d", count, min_labels
        )
        return None
    from slipway.cluster.storage import download

    original = load_dataset(training.data, training.seed, download=download)
    x_new, y_new = samples.x[labelled].astype(np.float32), y[labelled].astype(np.int64)
    if x_new.shape[1:] != original.input_shape:
        raise DataError(
            f"window: captured rows have sample shape {x_new.shape[1:]}, the training data "
            f"{training.data.source!r} has {original.input_shape}: is the monitor watching this model?"
        )
    if y_new.max() >= original.num_classes:
        raise DataError(
            f"window: feedback labels go up to {y_new.max()}, the model has {original.num_classes} classes"
        )
    counts = np.bincount(y_new)
    stratify = y_new if (counts[counts > 0] >= 2).all() else None
    x_keep, x_recent, y_keep, y_recent = train_test_split(
        x_new, y_new, test_size=recent_fraction, stratify=stratify, random_state=training.seed
    )
    arrays = {
        "x": np.concatenate([original.x_train, original.x_val, x_keep]),
        "y": np.concatenate([original.y_train, original.y_val, y_keep]),
        "x_test": original.x_test,
        "y_test": original.y_test,
        "x_recent": x_recent,
        "y_recent": y_recent,
    }
    with open(out, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds
    return {
        "labelled_rows": count,
        "train_rows_added": len(y_keep),
        "recent_rows": len(y_recent),
        "original_rows": len(original.y_train) + len(original.y_val),
    }


def run_here(pipeline: str, training: SlipwayConfig, output: Path) -> dict[str, Any]:
    """`slipway run PIPELINE` in a subprocess (kfp.local cannot nest in this task's process); its summary."""
    output.mkdir(parents=True, exist_ok=True)
    config_file = output / "retrain-config.yaml"
    config_file.write_text(yaml.safe_dump(training.model_dump(mode="json"), sort_keys=False))
    command = [sys.executable, "-m", "slipway", "run", pipeline, "--config", str(config_file)]
    command += ["--output", str(output), "--allow-reject"]
    log.info("retraining here: %s", " ".join(command))
    # This task runs under KFP's executor, which hides kfp.dsl's authoring API (`_KFP_RUNTIME`): not for the child.
    env = {k: v for k, v in os.environ.items() if k != "_KFP_RUNTIME"}
    done = subprocess.run(command, check=False, env=env)
    summary_file = output / "summary.json"
    if done.returncode != 0 or not summary_file.is_file():
        raise TrainingError(f"the local retrain run failed (exit {done.returncode}); see {output}")
    summary: dict[str, Any] = json.loads(summary_file.read_text())
    return {
        "status": summary["status"],
        "run": summary.get("mlflow_run_id"),
        "version": (summary.get("registry") or {}).get("version"),
        "summary": str(summary_file),
    }


def submit_to_kubeflow(
    cfg: SlipwayConfig, pipeline: str, package: Path, parameters: list[str], training: SlipwayConfig, uri: str
) -> dict[str, Any]:
    """Submit the package with the retrain config and the new dataset's URI; returns at once."""
    from slipway.cluster.kfp_client import submit_package

    raw = to_parameter(training, exclude={"cluster"})
    typed = [name for name in run_parameters.RUN_PARAMETERS if name in parameters]
    arguments = {"config": raw, "run_key": uuid.uuid4().hex, **run_parameters.from_config(raw, typed)}
    arguments["data_source"] = uri
    run = submit_package(
        package,
        run_name=f"retrain {pipeline} after drift in {cfg.name}",
        experiment=training.registry.experiment,
        service_account=cfg.cluster.service_account,
        host=cfg.monitor.kfp_host,
        arguments=arguments,
        inline=True,  # the monitor's service account may create runs, not upload pipelines
    )
    return {"status": "submitted", "run": run.run_id}


def retrain(cfg: SlipwayConfig, window: Path, dataset: Path, dataset_uri: str) -> dict[str, Any]:
    """Build the retraining dataset at `dataset` (reachable as `dataset_uri`) and launch the training pipeline.

    Returns what was done: `status` is off, too_few_labels, submitted, or the local run's succeeded/rejected."""
    monitor = cfg.monitor
    if not monitor.retrain:
        log.info("drift detected; retraining is off (monitor.retrain=false)")
        dataset.write_bytes(b"")
        return {"status": "off"}
    if not monitor.retrain_package:
        raise ConfigError(
            "monitor.retrain_package: not set; compile the training pipeline with its config "
            f"(`slipway compile {monitor.retrain_pipeline} --config train.yaml -o retrain.yaml`) and point it there"
        )
    if monitor.retrain_target == "kubeflow" and not monitor.kfp_host:
        raise ConfigError(
            "monitor.kfp_host: not set; where should the retrain run go? (or retrain_target=local)"
        )
    from slipway.cluster.storage import download

    with tempfile.TemporaryDirectory(prefix="slipway-retrain-") as tmp:
        package = download(monitor.retrain_package, Path(tmp) / "pipeline.yaml")
        pipeline, compiled, parameters = read_package(package)
        training = validate_config(apply_overrides(compiled, monitor.retrain_overrides))
        counts = retrain_dataset(training, window, dataset, monitor.min_labels, monitor.recent_test_fraction)
        if counts is None:
            dataset.write_bytes(b"")
            return {"status": "too_few_labels", "min_labels": monitor.min_labels}
        training.data.source = str(dataset) if monitor.retrain_target == "local" else dataset_uri
        if training.registry.tracking_uri is None:  # one registry for the champion and its successor
            training.registry.tracking_uri = cfg.registry.tracking_uri
            training.registry.artifact_location = (
                training.registry.artifact_location or cfg.registry.artifact_location
            )
        log.info("retrain dataset: %s", counts)
        if monitor.retrain_target == "local":
            launched = run_here(pipeline, training, dataset.parent / "retrain")
        else:
            launched = submit_to_kubeflow(cfg, pipeline, package, parameters, training, dataset_uri)
    log.info("drift detected; retrain %s: %s", pipeline, launched)
    return {"target": monitor.retrain_target, "pipeline": pipeline, **counts, **launched}

"""The training step in a cluster: the task pod submits a TrainJob/PyTorchJob; each of the job's ranks trains.

`train_in_cluster` runs in the pipeline's task pod: create the job, follow it, fetch its model. Inside the job,
`torchrun -m slipway.steps.cluster_train ARGS` starts one rank per GPU: each fetches the inputs, trains with
DDP, and rank 0 uploads the model and result (`slipway.cluster.trainjob.worker_args` writes ARGS).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
from pathlib import Path

from slipway.cluster.storage import download, upload
from slipway.cluster.trainjob import (
    MODEL_FILE,
    RESULT_FILE,
    ClusterTrainResult,
    Role,
    TrainingJobClient,
    TrainingRequest,
)
from slipway.core.config import SlipwayConfig, validate_config
from slipway.core.logs import setup_logging
from slipway.steps.train import fit_in_process
from slipway.training import distributed
from slipway.training.loop import TrainResult

log = logging.getLogger(__name__)


def train_in_cluster(
    cfg: SlipwayConfig,
    role: Role,
    dataset_uri: str,
    model_path: Path,
    teacher_uri: str | None = None,
    client: TrainingJobClient | None = None,
) -> ClusterTrainResult:
    """The cluster training step: run the job, then copy its model to `model_path` for the next step."""
    request = TrainingRequest(cfg, role, dataset_uri, teacher_uri)
    outcome = (client or TrainingJobClient()).run(request)
    download(outcome.model_uri, model_path)
    return outcome


def run_cluster_worker(
    config_json: str, role: str, dataset_uri: str, teacher_uri: str | None, output_uri: str
) -> int:
    """One rank inside the job's pod (started by torchrun): fetch inputs, train with DDP, rank 0 uploads."""
    setup_logging()
    cfg = validate_config(json.loads(config_json))
    train_cfg = cfg.train if role == "teacher" else cfg.distill
    with distributed.process_group(train_cfg.device) as env, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dataset = download(dataset_uri, work / "dataset.npz")
        teacher = download(teacher_uri, work / "teacher.pt") if teacher_uri else None
        model_path = work / MODEL_FILE
        result: TrainResult = fit_in_process(cfg, role, dataset, model_path, teacher)
        if env.is_main:
            upload(model_path, f"{output_uri.rstrip('/')}/{MODEL_FILE}")
            result_path = work / RESULT_FILE
            result_path.write_text(json.dumps(dataclasses.asdict(result)))
            upload(result_path, f"{output_uri.rstrip('/')}/{RESULT_FILE}")
            log.info("rank 0 wrote %s/%s", output_uri.rstrip("/"), MODEL_FILE)
        distributed.barrier(env)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slipway.steps.cluster_train")
    parser.add_argument("--config-json", required=True)
    parser.add_argument("--role", choices=("teacher", "student"), required=True)
    parser.add_argument("--dataset-uri", required=True)
    parser.add_argument("--teacher-uri", default=None)
    parser.add_argument("--output-uri", required=True)
    ns = parser.parse_args(argv)
    return run_cluster_worker(ns.config_json, ns.role, ns.dataset_uri, ns.teacher_uri, ns.output_uri)


if __name__ == "__main__":
    sys.exit(main())

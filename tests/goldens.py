"""The golden files the tests compare against, and how to regenerate them: `python tests/goldens.py`.

`make check` runs it, then fails on a diff. Test fixtures, kept out of the installed library.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from slipway.cluster.trainjob import TrainingRequest, build_job, render
from slipway.core.config import load_config

GOLDEN_DIR = Path(__file__).parent / "pipelines" / "golden"
TRAINJOB_GOLDEN_DIR = Path(__file__).parent / "unit" / "golden" / "trainjob"


def normalize(text: str) -> str:
    """Drop what changes without a change in the pipeline: SDK version, image tags, KFP's header comment
    (it prints dict defaults in hash order)."""
    lines = []
    for line in text.splitlines():
        if line.startswith(("sdkVersion:", "#")):
            continue
        match = re.match(r"^(\s*image: [^\s:]+(?::\d+)?(?:/[^\s:]+)*):\S+$", line)
        lines.append(f"{match.group(1)}:<tag>" if match else line)
    return "\n".join(lines) + "\n"


def compile_normalized(name: str) -> str:
    """Compile a pipeline with its default preset and return the normalized YAML."""
    import tempfile

    from slipway.cli.compile import compile_pipeline
    from slipway.pipelines import get_pipeline

    entry = get_pipeline(name)
    with tempfile.TemporaryDirectory() as tmp:
        out = compile_pipeline(entry, load_config(entry.preset), Path(tmp) / f"{name}.yaml")
        text = out.read_text()
    list(yaml.safe_load_all(text))  # must stay valid YAML (a platform spec is a second document)
    return normalize(text)


GOLDEN_DATASET_URI = "minio://mlpipeline/v2/artifacts/slipway-quickstart/run/prepare-data/dataset"


def golden_requests() -> dict[str, TrainingRequest]:
    """Fixed requests whose manifests are committed under tests/unit/golden/trainjob/."""
    common = [
        "train.distributed.num_nodes=2",
        "train.distributed.gpus_per_node=4",
        "train.distributed.memory_per_node=64Gi",
        "train.distributed.namespace=ml-team",
        "train.distributed.artifact_uri_prefix=s3://slipway-artifacts/distributed",
        "train.distributed.env={MLFLOW_TRACKING_URI: 'http://mlflow.mlflow:5000'}",
        "train.distributed.secret_env={AWS_ACCESS_KEY_ID: 'slipway-s3:access-key'}",
        "train.precision=bf16",
    ]
    trainjob = load_config("quickstart", common)
    pytorchjob = load_config("quickstart", [*common, "train.distributed.engine=pytorchjob"])
    elastic = load_config(
        "quickstart",
        [*common, "train.distributed.engine=pytorchjob", "train.distributed.elastic_min_nodes=1"],
    )
    return {
        "trainjob": TrainingRequest(trainjob, "teacher", GOLDEN_DATASET_URI),
        "pytorchjob": TrainingRequest(pytorchjob, "teacher", GOLDEN_DATASET_URI),
        "pytorchjob-elastic": TrainingRequest(elastic, "teacher", GOLDEN_DATASET_URI),
    }


def write_goldens(directory: str | Path) -> list[Path]:
    """Write the golden TrainJob / PyTorchJob manifests into `directory` (one YAML file each)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, request in golden_requests().items():
        path = out / f"{name}.yaml"
        path.write_text(render(build_job(request)))
        written.append(path)
    return written


def main() -> int:
    from slipway.pipelines import PIPELINES

    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for name in PIPELINES:
        (GOLDEN_DIR / f"{name}.yaml").write_text(compile_normalized(name))
    write_goldens(TRAINJOB_GOLDEN_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())

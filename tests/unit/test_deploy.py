"""The deploy step: a real local server, smoke-tested over HTTP and gRPC; URIs mapped for KServe."""

from pathlib import Path

import pytest
import torch

from slipway import registry
from slipway.cluster.storage import s3_uri as storage_uri
from slipway.compression.onnx_export import export_onnx
from slipway.core.config import ModelSpec, load_config
from slipway.core.models import build_model
from slipway.serving.triton_repository import write_model
from slipway.steps.deploy import deploy_model


def test_storage_uri_maps_minio_to_s3() -> None:
    assert storage_uri("minio://mlpipeline/v2/artifacts/x") == "s3://mlpipeline/v2/artifacts/x"
    assert storage_uri("gs://b/x") == "gs://b/x"


@pytest.mark.parametrize("target", ["local", "none"])
def test_local_deploy_serves_and_smoke_tests(tmp_path: Path, target: str) -> None:
    uri, artifacts = registry.local_store(tmp_path / "store")
    cfg = load_config("quickstart", [f"registry.tracking_uri={uri}", f"deploy.target={target}"])
    torch.manual_seed(0)
    export_onnx(
        build_model(ModelSpec(architecture="student_cnn"), (1, 8, 8), 10), (1, 8, 8), tmp_path / "m.onnx"
    )
    write_model(tmp_path / "repo", cfg.registry.model_name, tmp_path / "m.onnx", cfg.triton)
    run_id = registry.start_run(cfg.registry, "k", artifacts, {})
    outcome = deploy_model(cfg, run_id, tmp_path / "repo", str(tmp_path / "repo"))
    assert outcome["target"] == target
    if target == "local":
        assert set(outcome["smoke"]) == {"http", "grpc"}
    assert registry.find_run(cfg.registry, "k").data.tags["slipway.deploy"] == (
        f'{{"target": "{target}", "model": "slipway-quickstart"}}'
    )

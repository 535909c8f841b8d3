"""MLflow registry on a real SQLite store: runs, versions with lineage tags, aliases, the champion."""

from pathlib import Path

import numpy as np
import pytest
import torch

from slipway import registry
from slipway.compression.onnx_export import export_onnx
from slipway.core.artifacts import sha256_file
from slipway.core.config import ModelSpec, RegistryConfig
from slipway.core.errors import RegistryError
from slipway.core.models import build_model


@pytest.fixture
def store(tmp_path: Path) -> RegistryConfig:
    uri, artifacts = registry.local_store(tmp_path)
    return RegistryConfig(tracking_uri=uri, artifact_location=artifacts, experiment="t", model_name="m")


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("m") / "m.onnx"
    torch.manual_seed(0)
    export_onnx(build_model(ModelSpec(architecture="mlp"), (4,), 3), (4,), path)
    return path


EXAMPLE = np.zeros((2, 4), dtype=np.float32)


def test_run_lifecycle_and_versions(store: RegistryConfig, onnx_file: Path, tmp_path: Path) -> None:
    run_id = registry.start_run(store, "key-1", store.artifact_location, {"train.epochs": 3})
    registry.log_metrics(store, run_id, {"teacher.val_accuracy": 0.5}, step=1)
    registry.set_tags(store, run_id, {"slipway.gate": {"passed": True}})
    (tmp_path / "report").write_text("{}")
    registry.log_artifact(store, run_id, tmp_path / "report", "evaluation", "report.json")
    run = registry.find_run(store, "key-1")
    assert run.info.run_id == run_id
    assert run.data.params["train.epochs"] == "3" and run.data.tags["slipway.gate"] == '{"passed": true}'
    assert registry.champion(store) is None

    tags = {"slipway.accuracy": "0.9", "slipway.sha256": "ab"}
    v1 = registry.register_onnx(store, run_id, onnx_file, tags, EXAMPLE)
    assert (v1.version, v1.aliases) == ("1", ["challenger"])
    stored_tags = registry.mlflow_client(store).get_model_version("m", "1").tags
    assert stored_tags["slipway.sha256"] == sha256_file(onnx_file)  # the caller's "ab" is overwritten
    promoted = registry.promote(store, v1.version)
    assert promoted.aliases == ["challenger", "champion"]
    champ = registry.champion(store)
    assert champ is not None and (champ.version, champ.accuracy) == ("1", 0.9)

    v2 = registry.register_onnx(store, run_id, onnx_file, {"slipway.accuracy": "0.95"}, EXAMPLE)
    assert v2.version == "2" and v2.aliases == ["challenger"]
    assert registry.describe_version(store, "1").aliases == ["champion"]  # challenger moved on


def test_champion_without_accuracy_tag_is_an_error(store: RegistryConfig, onnx_file: Path) -> None:
    run_id = registry.start_run(store, "k", store.artifact_location, {})
    v = registry.register_onnx(store, run_id, onnx_file, {}, EXAMPLE)
    registry.promote(store, v.version)
    with pytest.raises(RegistryError, match=r"no slipway\.accuracy tag"):
        registry.champion(store)


def test_missing_tracking_uri_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(RegistryError, match="MLFLOW_TRACKING_URI"):
        registry.tracking_uri(RegistryConfig())

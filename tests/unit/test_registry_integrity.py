"""Registry integrity on a real SQLite store: registered, downloaded and packaged bytes are the same bytes.

The ONNX file here has its fields out of protobuf's canonical order and weights above onnx's 1 KiB
external-data threshold: plain `mlflow.onnx.log_model` would store other bytes (re-serialized, weights split
off), so these tests fail unless the registry keeps the source file byte for byte.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slipway import registry
from slipway.core.artifacts import sha256_file
from slipway.core.config import RegistryConfig
from slipway.core.errors import NotFoundError, RegistryError

EXAMPLE = np.linspace(-1, 1, 3 * 64, dtype=np.float32).reshape(3, 64)


@pytest.fixture
def store(tmp_path: Path) -> RegistryConfig:
    uri, artifacts = registry.local_store(tmp_path / "store")
    return RegistryConfig(tracking_uri=uri, artifact_location=artifacts, experiment="t", model_name="m")


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    """input (batch, 64) @ w (64, 8) -> logits; serialized graph first, so a re-serialization differs."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 8])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    graph_only, rest = onnx.ModelProto(), onnx.ModelProto()
    graph_only.graph.CopyFrom(model.graph)
    rest.CopyFrom(model)
    rest.ClearField("graph")
    path = tmp_path / "student.onnx"
    path.write_bytes(graph_only.SerializeToString() + rest.SerializeToString())
    loaded = onnx.load(str(path))
    assert loaded == model and loaded.SerializeToString() != path.read_bytes()  # the premise of these tests
    return path


def _local(uri: str) -> Path:
    assert uri.startswith("file:")
    return Path(urlparse(uri).path)


def _register(store: RegistryConfig, onnx_file: Path, tags: dict[str, str] | None = None) -> tuple[str, str]:
    run_id = registry.start_run(store, "key", store.artifact_location, {})
    return run_id, registry.register_onnx(store, run_id, onnx_file, tags or {}, EXAMPLE).version


def _stored_onnx(store: RegistryConfig, version: str) -> Path:
    return _local(registry.mlflow_client(store).get_model_version_download_uri("m", version)) / "model.onnx"


def _version_tags(store: RegistryConfig, version: str) -> dict[str, str]:
    return registry.mlflow_client(store).get_model_version("m", version).tags


def _run_artifacts(store: RegistryConfig, run_id: str) -> Path:
    return _local(registry.mlflow_client(store).get_run(run_id).info.artifact_uri)


def test_stored_model_is_the_source_file_and_its_digest_is_the_tag(
    store: RegistryConfig, onnx_file: Path, tmp_path: Path
) -> None:
    _, version = _register(store, onnx_file, {"slipway.sha256": "caller-value", "slipway.accuracy": "0.9"})
    tags = _version_tags(store, version)
    stored = _stored_onnx(store, version)
    assert stored.is_relative_to(tmp_path / "store")  # in the configured store, not ./mlruns
    assert tags["slipway.sha256"] == sha256_file(stored) == sha256_file(onnx_file)
    assert tags["slipway.accuracy"] == "0.9"
    graph = onnx.load(str(stored), load_external_data=False).graph
    assert all(t.data_location != TensorProto.EXTERNAL for t in graph.initializer)  # one file, weights inside


def test_signature_and_input_example_are_logged(store: RegistryConfig, onnx_file: Path) -> None:
    import mlflow

    _, version = _register(store, onnx_file)
    with registry._fluent_store(registry.tracking_uri(store)):
        info = mlflow.models.get_model_info(f"models:/m/{version}")
        example = mlflow.models.Model.load(f"models:/m/{version}").load_input_example()
    assert info.signature is not None
    assert info.signature.inputs.input_names() == ["input"]
    assert info.signature.outputs.input_names() == ["logits"]
    assert info.signature.inputs.inputs[0].shape == (-1, 64)
    assert info.saved_input_example_info is not None
    np.testing.assert_allclose(example["input"], EXAMPLE)


def test_a_store_that_changes_the_bytes_is_refused_before_registration(
    store: RegistryConfig, onnx_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save = registry._VerbatimOnnx.save_model

    def corrupting(self, path, mlflow_model, **kwargs):
        save(self, path, mlflow_model, **kwargs)
        with open(Path(path) / "model.onnx", "ab") as fh:
            fh.write(b"\0")

    monkeypatch.setattr(registry._VerbatimOnnx, "save_model", corrupting)
    run_id = registry.start_run(store, "key", store.artifact_location, {})
    with pytest.raises(RegistryError, match=f"not the source's {sha256_file(onnx_file)}"):
        registry.register_onnx(store, run_id, onnx_file, {}, EXAMPLE)
    assert registry.mlflow_client(store).search_model_versions("name='m'") == []


def test_external_data_and_a_wrong_example_are_refused(
    store: RegistryConfig, onnx_file: Path, tmp_path: Path
) -> None:
    run_id = registry.start_run(store, "key", store.artifact_location, {})
    split = tmp_path / "split" / "model.onnx"
    split.parent.mkdir()
    onnx.save_model(onnx.load(str(onnx_file)), str(split), save_as_external_data=True, location="weights")
    with pytest.raises(RegistryError, match="external data"):
        registry.register_onnx(store, run_id, split, {}, EXAMPLE)
    with pytest.raises(RegistryError, match="cannot run the input example"):
        registry.register_onnx(store, run_id, onnx_file, {}, EXAMPLE.astype(np.float64))


def test_download_model_verifies_and_refuses_a_tampered_file(
    store: RegistryConfig, onnx_file: Path, tmp_path: Path
) -> None:
    _, version = _register(store, onnx_file)
    path = registry.download_model(store, version, tmp_path / "dl")
    assert path == tmp_path / "dl" / "model.onnx" and path.read_bytes() == onnx_file.read_bytes()

    stored = _stored_onnx(store, version)
    stored.write_bytes(stored.read_bytes() + b"tampered")
    tampered = sha256_file(stored)
    with pytest.raises(RegistryError) as err:
        registry.download_model(store, version, tmp_path / "dl2")
    assert sha256_file(onnx_file) in str(err.value) and tampered in str(err.value)
    assert f"m v{version}" in str(err.value)
    assert not (tmp_path / "dl2" / "model.onnx").exists()  # a refused file is not left behind


def test_download_model_without_digest_tag_is_an_error(
    store: RegistryConfig, onnx_file: Path, tmp_path: Path
) -> None:
    _, version = _register(store, onnx_file)
    registry.mlflow_client(store).delete_model_version_tag("m", version, "slipway.sha256")
    with pytest.raises(RegistryError, match=r"m v1 has no slipway\.sha256 tag"):
        registry.download_model(store, version, tmp_path / "dl")


def test_checkpoint_round_trip_and_tamper(store: RegistryConfig, onnx_file: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "parent.pt"
    checkpoint.write_bytes(b"pytorch parent " * 100)
    run_id = registry.start_run(store, "key", store.artifact_location, {})
    # Logged before registration (as select_format does): register_onnx carries the digest to the version.
    digest = registry.log_checkpoint(store, run_id, None, checkpoint)
    version = registry.register_onnx(store, run_id, onnx_file, {}, EXAMPLE).version
    assert _version_tags(store, version)["slipway.checkpoint_sha256"] == digest

    path, found = registry.download_checkpoint(store, "m", tmp_path / "a", alias="challenger")
    assert path.read_bytes() == checkpoint.read_bytes() and (found.version, found.run_id) == (version, run_id)
    path, found = registry.download_checkpoint(store, "m", tmp_path / "b", version=version)
    assert path.name == "model.pt" and sha256_file(path) == digest

    stored = _run_artifacts(store, run_id) / "checkpoint" / "model.pt"
    stored.write_bytes(b"swapped")
    with pytest.raises(RegistryError) as err:
        registry.download_checkpoint(store, "m", tmp_path / "c", version=version)
    assert digest in str(err.value) and hashlib.sha256(b"swapped").hexdigest() in str(err.value)


def test_log_checkpoint_after_registration_tags_the_version(
    store: RegistryConfig, onnx_file: Path, tmp_path: Path
) -> None:
    run_id, version = _register(store, onnx_file)
    checkpoint = tmp_path / "parent.pt"
    checkpoint.write_bytes(b"late parent")
    digest = registry.log_checkpoint(store, run_id, version, checkpoint)
    assert _version_tags(store, version)["slipway.checkpoint_sha256"] == digest
    path, _ = registry.download_checkpoint(store, "m", tmp_path / "dl", version=version)
    assert path.read_bytes() == b"late parent"
    with pytest.raises(RegistryError, match="belongs to run"):
        registry.log_checkpoint(store, "another-run", version, checkpoint)


def test_checkpoint_errors_name_what_is_missing(
    store: RegistryConfig, onnx_file: Path, tmp_path: Path
) -> None:
    _, version = _register(store, onnx_file)
    predates = (
        r"m v1 has no slipway\.checkpoint_sha256 tag: it predates checkpoint digests; set source\.checkpoint"
    )
    with pytest.raises(RegistryError, match=predates):
        registry.download_checkpoint(store, "m", tmp_path / "dl", version=version)

    registry.mlflow_client(store).set_model_version_tag("m", version, "slipway.checkpoint_sha256", "0" * 64)
    with pytest.raises(NotFoundError, match=r"m v1: its run .* at sqlite:.* has no checkpoint/model\.pt"):
        registry.download_checkpoint(store, "m", tmp_path / "dl", version=version)
    with pytest.raises(NotFoundError, match=r"registered model 'm' version 7 not found at sqlite:"):
        registry.download_checkpoint(store, "m", tmp_path / "dl", version="7")
    with pytest.raises(NotFoundError, match=r"registered model 'm' alias 'champion' not found"):
        registry.download_checkpoint(store, "m", tmp_path / "dl", alias="champion")


def test_model_repository_is_logged_with_its_digest(
    store: RegistryConfig, onnx_file: Path, tmp_path: Path
) -> None:
    import mlflow

    run_id, version = _register(store, onnx_file)
    repo = tmp_path / "repo"
    (repo / "m" / "1").mkdir(parents=True)
    (repo / "m" / "config.pbtxt").write_text('name: "m"\nbackend: "onnxruntime"\n')
    (repo / "m" / "1" / "model.onnx").write_bytes(onnx_file.read_bytes())

    uri = registry.log_model_repository(store, version, repo)
    tags = _version_tags(store, version)
    run_uri = registry.mlflow_client(store).get_run(run_id).info.artifact_uri
    assert uri == tags["slipway.model_repository"] == f"{run_uri}/triton_model_repository"
    fetched = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "fetched")))
    assert sorted(p.relative_to(fetched).as_posix() for p in fetched.rglob("*") if p.is_file()) == [
        "m/1/model.onnx",
        "m/config.pbtxt",
    ]
    expected = hashlib.sha256(
        "".join(f"{sha256_file(repo / r)}  {r}\n" for r in ("m/1/model.onnx", "m/config.pbtxt")).encode()
    ).hexdigest()
    assert tags["slipway.model_repository_sha256"] == expected == registry.directory_sha256(fetched)

    (repo / "m" / "config.pbtxt").rename(repo / "m" / "config.txt")  # a renamed file changes the digest
    assert registry.directory_sha256(repo) != expected

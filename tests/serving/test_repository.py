"""Loading a repository: verified bytes or nothing, and a config that matches the graph."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from slipway.core.errors import ArtifactIntegrityError, NotFoundError, TritonConfigError
from slipway.serving.datatypes import NUMPY_TO_V2, V2_TO_NUMPY, from_triton_type, triton_type
from slipway.serving.loader import SessionOptions, load_model_dir, load_repository
from slipway.serving.server import start_server
from slipway.serving.triton_repository import CONFIG_FILE, read_model_config


@pytest.fixture
def repo_copy(model_repo: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_repo, tmp_path / "repo"))


def test_loads_every_model_with_instance_count(model_repo: Path) -> None:
    models = load_repository(model_repo, SessionOptions(intra_op_threads=1))
    assert sorted(models) == ["digits", "direct", "pair"]
    assert len(models["pair"].sessions) == 2 and len(models["digits"].sessions) == 1
    assert models["digits"].dynamic_batching and not models["direct"].dynamic_batching
    assert models["digits"].sessions[0].get_session_options().intra_op_num_threads == 1


def test_datatype_table_names_real_triton_types() -> None:
    """The one dtype table: every v2 name maps to a Triton config type and back, and to its numpy dtype."""
    for name, datatype in NUMPY_TO_V2.items():
        number = mc.DataType.Value(triton_type(datatype))
        assert from_triton_type(mc.DataType.Name(number)) == datatype
        assert V2_TO_NUMPY[datatype].name == name
    assert from_triton_type("TYPE_STRING") is None and from_triton_type("FP32") is None


def test_sha256_mismatch_refused_at_load(repo_copy: Path) -> None:
    model_file = repo_copy / "digits" / "1" / "model.onnx"
    data = bytearray(model_file.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit: still a file ORT might load, but not the one that was verified
    model_file.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="does not match metadata"):
        load_model_dir(repo_copy / "digits")
    with pytest.raises(ArtifactIntegrityError):
        start_server(repo_copy)  # the server refuses to start rather than serve a tampered model


def test_missing_sidecar_loads_unless_a_digest_is_required(repo_copy: Path) -> None:
    """An ordinary Triton model (no Slipway metadata) is served, unchecked; --require-digest refuses it."""
    (repo_copy / "direct" / "1" / "model.onnx.meta.json").unlink()
    assert load_model_dir(repo_copy / "direct").artifact is None
    with pytest.raises(ArtifactIntegrityError, match=r"no Slipway metadata model\.onnx\.meta\.json"):
        load_model_dir(repo_copy / "direct", SessionOptions(require_digest=True))


def test_newest_version_is_served(repo_copy: Path) -> None:
    shutil.copytree(repo_copy / "digits" / "1", repo_copy / "digits" / "3")
    assert load_model_dir(repo_copy / "digits").version == "3"


def test_config_must_name_graph_tensors(repo_copy: Path) -> None:
    config = read_model_config(repo_copy / "direct")
    config.input[0].name = "pixels"
    (repo_copy / "direct" / CONFIG_FILE).write_text(text_format.MessageToString(config))
    with pytest.raises(TritonConfigError, match="differ from the graph"):
        load_model_dir(repo_copy / "direct")


def test_empty_repository_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="holds no model"):
        load_repository(tmp_path)


def test_ort_threads_do_not_spin_unless_asked(model_repo: Path) -> None:
    """Spinning ORT threads starve the server's event loop on small machines (docs/benchmarks.md); opt-in."""

    def spinning(options: SessionOptions) -> set[str]:
        model = load_model_dir(model_repo / "digits", options)
        return {
            s.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
            for s in model.sessions
        }

    assert spinning(SessionOptions()) == {"0"}
    assert spinning(SessionOptions(allow_spinning=True)) == {"1"}

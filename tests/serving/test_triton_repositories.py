"""Ordinary Triton repositories served by `slipway serve` as Triton serves them (issue #15, items 1 and 2).

Each repository here is written by hand, the way users write them for Triton: config.pbtxt as literal text, an
ONNX graph built with onnx.helper (or exported with torch.onnx), no Slipway metadata sidecar. They are served by
the real server (`start_server`, `slipway serve`) and called with the real tritonclient over HTTP and gRPC.

Also: NaN/Inf inputs are accepted by default (Triton's behaviour; its load generator sends them) and refused
with 400 / INVALID_ARGUMENT naming the tensor when a model sets parameter `reject_non_finite`; a model with
Slipway's metadata is still checked byte for byte (a tampered one is refused), and `--require-digest` (and the
deploy step, which uses it) refuses a model without metadata.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from slipway.core.errors import ArtifactIntegrityError, NotFoundError, TritonConfigError
from slipway.serving.loader import DEFAULT_MAX_BATCH_SIZE, SessionOptions, load_model_dir
from slipway.serving.server import ServerHandle, start_server
from slipway.serving.service import ServerOptions
from slipway.steps.deploy import deploy_local, deploy_to_server

SLIPWAY = Path(sys.executable).parent / "slipway"


# --- building hand-written repositories ---------------------------------------------------------------------


def scale_graph(path: Path, shape: list[int | str], factor: float) -> Path:
    """y = x * factor, FP32, both of `shape` (a str is a symbolic dim, e.g. the batch axis)."""
    node = helper.make_node("Mul", ["x", "factor"], ["y"])
    graph = helper.make_graph(
        [node],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [helper.make_tensor("factor", TensorProto.FLOAT, [], [factor])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def model_folder(
    repo: Path, name: str, config: str, graphs: dict[str, tuple[list[int | str], float]]
) -> Path:
    """REPO/<name>/config.pbtxt (the text as given) and one scale graph per `<version>/<file>` entry."""
    folder = repo / name
    folder.mkdir(parents=True)
    (folder / "config.pbtxt").write_text(config)
    for relative, (shape, factor) in graphs.items():
        scale_graph(folder / relative, shape, factor)
    return folder


BATCHED = """
name: "batched"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""
GUARDED = """
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
parameters { key: "reject_non_finite" value { string_value: "true" } }
"""
WIDE = BATCHED.replace('name: "batched"', 'name: "wide"').replace("[ 4 ]", "[ 1024 ]")
WIDE_GUARDED = GUARDED.replace("[ 4 ]", "[ 1024 ]")
# No max_batch_size (0: no batching, full shapes in dims) and no name (taken from the folder).
UNBATCHED = """
platform: "onnxruntime_onnx"
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2, 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 2, 4 ] } ]
"""
RESHAPED = """
name: "reshaped"
backend: "onnxruntime"
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4, 4 ] reshape: { shape: [ 16 ] } } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4, 4 ] reshape: { shape: [ 16 ] } } ]
"""
RENAMED_FILE = """
platform: "onnxruntime_onnx"
default_model_filename: "scaled.onnx"
max_batch_size: 2
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""
SPECIFIC = """
backend: "onnxruntime"
max_batch_size: 8
version_policy: { specific: { versions: [ 2 ] } }
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""
LATEST_ONE = SPECIFIC.replace("specific: { versions: [ 2 ] }", "latest: { num_versions: 1 }")
# Inputs and outputs left to Triton's autocomplete: max_batch_size too (the graph batches: 4, dynamic batching).
AUTOCOMPLETE = 'backend: "onnxruntime"\n'
# A graph whose only dim is the batch axis: autocomplete gives dims [1] with an empty reshape.
AUTOCOMPLETE_ROWS = 'platform: "onnxruntime_onnx"\nmax_batch_size: 16\n'
THREE_VERSIONS = {f"{v}/model.onnx": (["batch", 4], float(v)) for v in (1, 2, 3)}


def hand_written_repo(root: Path) -> Path:
    repo = root / "triton-repo"
    model_folder(repo, "batched", BATCHED, {"1/model.onnx": (["batch", 4], 2.0)})
    model_folder(repo, "guarded", GUARDED, {"1/model.onnx": (["batch", 4], 2.0)})
    # 1,024 floats a row: perf_analyzer's random bytes (glibc rand(), default seed) hold NaN/Inf patterns.
    model_folder(repo, "wide", WIDE, {"1/model.onnx": (["batch", 1024], 1.0)})
    model_folder(repo, "wide_guarded", WIDE_GUARDED, {"1/model.onnx": (["batch", 1024], 1.0)})
    model_folder(repo, "unbatched", UNBATCHED, {"1/model.onnx": ([2, 4], 3.0)})
    model_folder(repo, "reshaped", RESHAPED, {"1/model.onnx": (["batch", 16], 0.5)})
    model_folder(repo, "renamed_file", RENAMED_FILE, {"1/scaled.onnx": (["batch", "n"], 4.0)})
    model_folder(repo, "specific", SPECIFIC, THREE_VERSIONS)
    model_folder(repo, "latest_one", LATEST_ONE, THREE_VERSIONS)
    model_folder(repo, "autocomplete", AUTOCOMPLETE, {"1/model.onnx": (["batch", 4], 5.0)})
    model_folder(repo, "rows", AUTOCOMPLETE_ROWS, {"1/model.onnx": (["batch"], 6.0)})
    # Triton's folder form of an ONNX model (external data beside it): 1/model.onnx/model.onnx.
    model_folder(repo, "folder_form", BATCHED.replace("batched", "folder_form"), {})
    scale_graph(repo / "folder_form" / "1" / "model.onnx" / "model.onnx", ["batch", 4], 7.0)
    # Folders Triton ignores: a version starting with 0 and a non-numeric one (both would fail to load).
    (repo / "batched" / "01").mkdir()
    (repo / "batched" / "notes").mkdir()
    # A model exported by torch.onnx (the legacy exporter, one file, dynamic batch axis), config by hand.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    exported = repo / "torch_linear" / "1" / "model.onnx"
    exported.parent.mkdir(parents=True)
    torch.onnx.export(
        net,
        (torch.zeros(1, 4),),
        str(exported),
        input_names=["features"],
        output_names=["scores"],
        dynamic_axes={"features": {0: "batch"}, "scores": {0: "batch"}},
        dynamo=False,
    )
    (repo / "torch_linear" / "config.pbtxt").write_text(
        'name: "torch_linear"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 32\n'
        "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
        'input [ { name: "features" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "scores" data_type: TYPE_FP32 dims: [ 3 ] } ]\n'
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
    )
    return repo


@pytest.fixture(scope="module")
def triton_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hand_written_repo(tmp_path_factory.mktemp("hand-written"))


@pytest.fixture(scope="module")
def served(triton_repo: Path) -> Iterator[ServerHandle]:
    with start_server(triton_repo, threads=1, options=ServerOptions(timeout_s=10.0)) as handle:
        yield handle


@pytest.fixture(scope="module")
def http(served: ServerHandle) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(served.url.removeprefix("http://"))


@pytest.fixture(scope="module")
def grpc(served: ServerHandle) -> triton_grpc.InferenceServerClient:
    return triton_grpc.InferenceServerClient(served.grpc_url)


def infer(client: object, model: str, x: np.ndarray, name: str = "x", output: str = "y") -> np.ndarray:
    """One inference through tritonclient (HTTP binary or gRPC, by the client's module)."""
    module = triton_http if isinstance(client, triton_http.InferenceServerClient) else triton_grpc
    tensor = module.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(model, [tensor])  # type: ignore[attr-defined]
    out = result.as_numpy(output)
    assert out is not None
    return out


PROTOCOLS = ["http", "grpc"]


@pytest.fixture(params=PROTOCOLS)
def client(request: pytest.FixtureRequest) -> object:
    return request.getfixturevalue(request.param)


# --- serving a hand-written repository ----------------------------------------------------------------------


def test_every_hand_written_model_is_served(http: triton_http.InferenceServerClient) -> None:
    index = {m["name"]: m for m in http.get_model_repository_index()}
    expected = {
        "batched", "guarded", "unbatched", "reshaped", "renamed_file", "specific", "latest_one",
        "autocomplete", "rows", "folder_form", "torch_linear", "wide", "wide_guarded",
    }  # fmt: skip
    assert set(index) == expected
    assert all(m["state"] == "READY" for m in index.values()), index


@pytest.mark.parametrize(
    ("model", "shape", "factor"),
    [
        ("batched", (3, 4), 2.0),
        ("unbatched", (2, 4), 3.0),  # no max_batch_size: the full shape, no batch axis
        ("reshaped", (2, 4, 4), 0.5),  # [b, 4, 4] in and out; the graph sees [b, 16]
        ("renamed_file", (2, 5), 4.0),  # default_model_filename, variable dims
        ("specific", (1, 4), 2.0),  # version_policy specific [2] of versions 1, 2, 3
        ("latest_one", (1, 4), 3.0),  # version_policy latest 1: the newest
        ("autocomplete", (2, 4), 5.0),
        ("rows", (3, 1), 6.0),  # autocompleted dims [1], reshape [] -> the graph sees [b]
        ("folder_form", (1, 4), 7.0),
    ],
)
def test_infer_matches_the_graph(client: object, model: str, shape: tuple[int, ...], factor: float) -> None:
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(infer(client, model, x), x * factor, rtol=1e-6)


def test_torch_exported_model(client: object, triton_repo: Path) -> None:
    reference = ort.InferenceSession(str(triton_repo / "torch_linear" / "1" / "model.onnx"))
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    want = reference.run(["scores"], {"features": x})[0]
    np.testing.assert_allclose(infer(client, "torch_linear", x, "features", "scores"), want, rtol=1e-6)


def test_config_is_completed_as_triton_completes_it(http: triton_http.InferenceServerClient) -> None:
    auto = http.get_model_config("autocomplete")
    assert auto["name"] == "autocomplete" and auto["platform"] == "onnxruntime_onnx"
    assert auto["backend"] == "onnxruntime" and auto["default_model_filename"] == "model.onnx"
    assert auto["max_batch_size"] == DEFAULT_MAX_BATCH_SIZE and "dynamic_batching" in auto
    assert [(t["name"], t["data_type"], t["dims"]) for t in auto["input"]] == [("x", "TYPE_FP32", [4])]
    assert [(t["name"], t["data_type"], t["dims"]) for t in auto["output"]] == [("y", "TYPE_FP32", [4])]
    rows = http.get_model_config("rows")
    assert rows["input"][0]["dims"] == [1] and rows["input"][0]["reshape"].get("shape", []) == []
    assert rows["max_batch_size"] == 16 and "dynamic_batching" in rows
    unbatched = http.get_model_config("unbatched")
    assert unbatched["name"] == "unbatched" and unbatched.get("max_batch_size", 0) == 0
    assert unbatched["version_policy"] == {"latest": {"num_versions": 1}}


def test_metadata_names_the_served_version(client: object) -> None:
    specific = client.get_model_metadata("specific")  # type: ignore[attr-defined]
    latest = client.get_model_metadata("latest_one")  # type: ignore[attr-defined]
    unbatched = client.get_model_metadata("unbatched")  # type: ignore[attr-defined]
    if isinstance(client, triton_grpc.InferenceServerClient):
        assert list(specific.versions) == ["2"] and list(latest.versions) == ["3"]
        assert list(unbatched.inputs[0].shape) == [2, 4]
    else:
        assert specific["versions"] == ["2"] and latest["versions"] == ["3"]
        assert unbatched["inputs"][0]["shape"] == [2, 4]
    assert client.is_model_ready("specific", "2")  # type: ignore[attr-defined]


def test_wrong_shapes_are_refused_naming_the_tensor(client: object) -> None:
    with pytest.raises(InferenceServerException, match=r"model 'unbatched' input 'x': shape \[1, 2, 4\]"):
        infer(client, "unbatched", np.zeros((1, 2, 4), np.float32))
    with pytest.raises(InferenceServerException, match=r"batch size 9 must lie in 1\.\.8"):
        infer(client, "batched", np.zeros((9, 4), np.float32))


# --- NaN and Inf: accepted by default, refused on opt-in ----------------------------------------------------


def non_finite(rows: int = 2) -> np.ndarray:
    x = np.ones((rows, 4), np.float32)
    x[0, 0], x[0, 1], x[-1, 3] = np.nan, np.inf, -np.inf
    return x


def test_non_finite_inputs_are_accepted_by_default(client: object) -> None:
    """Triton's behaviour: NaN and Inf are values; they flow through the graph like any other."""
    out = infer(client, "batched", non_finite())
    np.testing.assert_array_equal(out, non_finite() * 2)


def test_non_finite_inputs_refused_when_the_model_opts_in(client: object) -> None:
    assert infer(client, "guarded", np.ones((2, 4), np.float32)).shape == (2, 4)
    with pytest.raises(InferenceServerException) as info:
        infer(client, "guarded", non_finite())
    grpc_client = isinstance(client, triton_grpc.InferenceServerClient)
    assert info.value.status() == ("StatusCode.INVALID_ARGUMENT" if grpc_client else "400")
    assert "model 'guarded' input 'x': 3 NaN or Inf value(s)" in info.value.message()
    assert "reject_non_finite" in info.value.message()


def test_non_finite_json_refused_too(http: triton_http.InferenceServerClient) -> None:
    tensor = triton_http.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(non_finite(1), binary_data=False)  # JSON: NaN, Infinity, -Infinity literals
    with pytest.raises(InferenceServerException, match="3 NaN or Inf value"):
        http.infer("guarded", [tensor])
    np.testing.assert_array_equal(http.infer("batched", [tensor]).as_numpy("y"), non_finite(1) * 2)


@pytest.mark.parametrize(("value", "refuses"), [("TRUE", True), ("1", True), ("false", False), ("0", False)])
def test_reject_non_finite_values(tmp_path: Path, value: str, refuses: bool) -> None:
    config = GUARDED.replace('string_value: "true"', f'string_value: "{value}"')
    folder = model_folder(tmp_path, "guarded", config, {"1/model.onnx": (["batch", 4], 1.0)})
    assert load_model_dir(folder).reject_non_finite is refuses


def test_bad_reject_non_finite_value_is_refused_at_load(tmp_path: Path) -> None:
    config = GUARDED.replace('string_value: "true"', 'string_value: "maybe"')
    folder = model_folder(tmp_path, "guarded", config, {"1/model.onnx": (["batch", 4], 1.0)})
    with pytest.raises(TritonConfigError, match="parameter reject_non_finite: expected"):
        load_model_dir(folder)


def test_obsolete_allow_non_finite_has_no_effect(tmp_path: Path) -> None:
    config = BATCHED + 'parameters { key: "allow_non_finite" value { string_value: "false" } }\n'
    folder = model_folder(tmp_path, "batched", config, {"1/model.onnx": (["batch", 4], 1.0)})
    assert load_model_dir(folder).reject_non_finite is False


# --- configs Triton refuses, or that slipway serve cannot honour: refused at load, naming the field ----------


REFUSED = [
    ("name differs", BATCHED.replace('name: "batched"', 'name: "other"'), "name 'other' must equal"),
    (
        "latest 2",
        SPECIFIC.replace("specific: { versions: [ 2 ] }", "latest: { num_versions: 2 }"),
        r"version_policy latest \{num_versions: 2\} selects versions \[2, 3\]",
    ),
    ("all", SPECIFIC.replace("specific: { versions: [ 2 ] }", "all: {}"), r"version_policy all \{\} selects"),
    (
        "specific missing",
        SPECIFIC.replace("versions: [ 2 ]", "versions: [ 7 ]"),
        r"version_policy specific \{versions: \[7\]\} names versions not under",
    ),
    (
        "two specific",
        SPECIFIC.replace("versions: [ 2 ]", "versions: [ 1, 3 ]"),
        "selects versions \\[1, 3\\]",
    ),
    ("tensorrt", BATCHED.replace("onnxruntime_onnx", "tensorrt_plan"), "platform 'tensorrt_plan'"),
    ("python", 'backend: "python"\n', "backend 'python' cannot run in slipway serve"),
    ("sequence", BATCHED + "sequence_batching { }\n", "`sequence_batching` \\(stateful"),
    ("decoupled", BATCHED + "model_transaction_policy { decoupled: true }\n", "decoupled"),
    (
        "optional",
        BATCHED.replace("dims: [ 4 ] } ]\noutput", "dims: [ 4 ] optional: true } ]\noutput"),
        "`optional`",
    ),
    (
        "empty dims",
        BATCHED.replace("dims: [ 4 ] } ]\noutput", "dims: [ ] } ]\noutput"),
        "dims \\[\\] must be",
    ),
    (
        "wrong dtype",
        BATCHED.replace("TYPE_FP32", "TYPE_FP64", 1),
        "data_type TYPE_FP64 but the graph has TYPE_FP32",
    ),
    (
        "wrong dims",
        BATCHED.replace("dims: [ 4 ] } ]\noutput", "dims: [ 5 ] } ]\noutput"),
        "dims give shape \\[-1, 5\\]",
    ),
    (
        "unknown output",
        BATCHED.replace('name: "y"', 'name: "z"'),
        "config output\\(s\\) \\['z'\\] not in the graph",
    ),
    ("unknown input", BATCHED.replace('name: "x"', 'name: "pixels"'), "differ from the graph"),
    ("batch, not batchable", UNBATCHED.replace("platform", "max_batch_size: 4\nplatform"), "dims give shape"),
    (
        "bad reshape",
        RESHAPED.replace("shape: [ 16 ] } } ]\noutput", "shape: [ 15 ] } } ]\noutput"),
        "reshape \\[15\\]",
    ),
    ("mbs < 0", BATCHED.replace("max_batch_size: 8", "max_batch_size: -1"), "max_batch_size -1 must be >= 0"),
    ("string", BATCHED.replace("TYPE_FP32", "TYPE_STRING", 1), "data_type TYPE_STRING is not supported"),
]


@pytest.mark.parametrize(("case", "config", "needle"), REFUSED, ids=[c[0] for c in REFUSED])
def test_unservable_config_refused_at_load(tmp_path: Path, case: str, config: str, needle: str) -> None:
    graphs = THREE_VERSIONS if "version_policy" in config else {"1/model.onnx": (["batch", 4], 1.0)}
    if case == "batch, not batchable":
        graphs = {"1/model.onnx": ([2, 4], 1.0)}
    if case == "bad reshape":
        graphs = {"1/model.onnx": (["batch", 16], 1.0)}
    named = re.search(r'^name: "(\w+)"$', config, re.MULTILINE)
    folder = model_folder(
        tmp_path, named.group(1) if named and case != "name differs" else "m", config, graphs
    )
    with pytest.raises((TritonConfigError, NotFoundError), match=needle):
        load_model_dir(folder)


def test_backend_inferred_only_from_a_model_onnx(tmp_path: Path) -> None:
    """Triton's rule: with neither platform nor backend, a model.onnx in the first version folder means ONNX."""
    inferred = model_folder(tmp_path, "bare", "max_batch_size: 2\n", {"1/model.onnx": (["batch", 4], 1.0)})
    assert load_model_dir(inferred).config.backend == "onnxruntime"
    config = 'default_model_filename: "net.onnx"\nmax_batch_size: 2\n'
    unknown = model_folder(tmp_path, "named", config, {"1/net.onnx": (["batch", 4], 1.0)})
    with pytest.raises(TritonConfigError, match="no `platform` or `backend`"):
        load_model_dir(unknown)


def test_autocomplete_refuses_a_batch_size_the_graph_cannot_take(tmp_path: Path) -> None:
    folder = model_folder(
        tmp_path, "m", 'backend: "onnxruntime"\nmax_batch_size: 4\n', {"1/model.onnx": ([2, 4], 1.0)}
    )
    with pytest.raises(
        TritonConfigError, match="autofill failed for model 'm': the graph does not support batching"
    ):
        load_model_dir(folder)
    folder = model_folder(tmp_path, "n", 'backend: "onnxruntime"\n', {"1/model.onnx": ([2, 4], 1.0)})
    model = load_model_dir(folder)  # no max_batch_size: Triton leaves it 0 and takes the full shapes
    assert model.max_batch_size == 0 and model.inputs["x"].dims == (2, 4)


def test_a_refused_model_stops_the_start(triton_repo: Path, tmp_path: Path) -> None:
    repo = Path(shutil.copytree(triton_repo, tmp_path / "repo"))
    (repo / "batched" / "config.pbtxt").write_text(BATCHED + "sequence_batching { }\n")
    with pytest.raises(TritonConfigError, match="sequence_batching"):
        start_server(repo)


# --- digests: checked when the metadata is there, required by --require-digest and the deploy step -----------


def test_no_digest_is_logged(triton_repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="slipway.serving.loader"):
        model = load_model_dir(triton_repo / "batched")
    assert model.artifact is None
    assert any("no digest checked" in r.getMessage() and "batched" in r.getMessage() for r in caplog.records)


def test_require_digest_refuses_a_model_without_metadata(triton_repo: Path) -> None:
    options = SessionOptions(require_digest=True)
    with pytest.raises(ArtifactIntegrityError, match=r"model 'batched' version 1: no Slipway metadata"):
        load_model_dir(triton_repo / "batched", options)
    with pytest.raises(ArtifactIntegrityError, match="ONNX model folder"):
        load_model_dir(triton_repo / "folder_form", options)


def test_slipway_model_is_served_with_require_digest(model_repo: Path) -> None:
    """A packaged repository passes --require-digest; through a subprocess, so the flag's plumbing is tested."""
    options = ServerOptions(require_digest=True)
    with start_server(model_repo, options=options, subprocess_mode=True, threads=1) as server:
        x = np.zeros((1, 1, 8, 8), np.float32)
        assert infer(
            triton_http.InferenceServerClient(server.url[7:]), "digits", x, "input", "logits"
        ).shape == (1, 10)


def tampered(model_repo: Path, tmp_path: Path) -> Path:
    repo = Path(shutil.copytree(model_repo, tmp_path / "repo"))
    model_file = repo / "direct" / "1" / "model.onnx"
    data = bytearray(model_file.read_bytes())
    data[-1] ^= 0xFF
    model_file.write_bytes(bytes(data))
    return repo


@pytest.mark.parametrize("require", [False, True], ids=["default", "require-digest"])
def test_tampered_slipway_model_still_refused(model_repo: Path, tmp_path: Path, require: bool) -> None:
    repo = tampered(model_repo, tmp_path)
    with pytest.raises(ArtifactIntegrityError, match="does not match metadata"):
        load_model_dir(repo / "direct", SessionOptions(require_digest=require))


def serve_cli(repo: Path, *flags: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`slipway serve REPO FLAGS` in a subprocess; expected to fail at load, before any port opens."""
    argv = [str(SLIPWAY), "serve", str(repo), "--http-port", "0", "--grpc-port", "0", *flags]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]


def test_cli_require_digest_refuses_a_hand_written_repo(triton_repo: Path) -> None:
    result = serve_cli(triton_repo, "--require-digest")
    assert result.returncode != 0
    errors = error_lines(result)
    assert len(errors) == 1, result.stderr
    assert "model 'autocomplete' version 1: no Slipway metadata model.onnx.meta.json" in errors[0]
    assert "--require-digest" in errors[0]


def test_cli_refuses_a_tampered_slipway_model(model_repo: Path, tmp_path: Path) -> None:
    result = serve_cli(tampered(model_repo, tmp_path))
    errors = error_lines(result)
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    assert "direct/1/model.onnx: sha256" in errors[0] and "does not match metadata" in errors[0]


def test_deploy_step_requires_digests(triton_repo: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactIntegrityError, match=r"model '\w+' version 1: no Slipway metadata"):
        deploy_local(triton_repo, "batched")
    with pytest.raises(ArtifactIntegrityError, match="no Slipway metadata"):
        deploy_to_server(triton_repo, "batched", "http://127.0.0.1:9", tmp_path / "served")
    assert not (tmp_path / "served").exists()  # refused before anything was staged


# --- Triton's own load generator, default random input (NaN/Inf bit patterns among it) ----------------------


def perf_analyzer() -> str | None:
    """Triton's perf_analyzer: $PERF_ANALYZER, on PATH, or in .tools/bin."""
    found = os.environ.get("PERF_ANALYZER") or shutil.which("perf_analyzer")
    tools = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "perf_analyzer"
    return found or (str(tools) if tools.is_file() else None)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_perf_analyzer_default_random_input(triton_repo: Path, protocol: str) -> None:
    """perf_analyzer, out of the box, for a few seconds: its random input holds NaN/Inf bit patterns (the
    opted-in model refuses them, which proves it) and the default model serves every request."""
    binary = perf_analyzer()
    if binary is None:
        reason = (
            "perf_analyzer not installed: set PERF_ANALYZER or put it on PATH (it ships as data/bin/perf_analyzer "
            "in the tritonclient 2.38.0 wheel; needs libb64-0d and libcudart.so.12 from nvidia-cuda-runtime-cu12)"
        )
        print(reason)
        pytest.skip(reason)
    outputs = {}
    with start_server(triton_repo, subprocess_mode=True, threads=1) as server:
        url = server.url.removeprefix("http://") if protocol == "http" else server.grpc_url
        for model in ("wide", "wide_guarded"):
            argv = [
                binary, "-m", model, "-u", url, "-i", protocol, "-b", "4",
                "--concurrency-range", "2", "-p", "1000", "--max-trials", "3", "--stability-percentage", "100",
            ]  # fmt: skip
            result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            outputs[model] = (result.returncode, result.stdout + result.stderr)
    code, output = outputs["wide"]
    assert code == 0 and "Throughput:" in output and "error" not in output.lower(), output
    code, output = outputs["wide_guarded"]
    assert code != 0 and "model 'wide_guarded' input 'x':" in output and "NaN or Inf value(s)" in output, (
        output
    )


# --- Triton's checksum repository agent: run before every load; any other agent is refused ---------------------


def _agent(name: str, parameters: dict[str, str]) -> str:
    params = " ".join(f'parameters {{ key: "{k}" value: "{v}" }}' for k, v in parameters.items())
    return f'model_repository_agents {{ agents [ {{ name: "{name}" {params} }} ] }}\n'


def test_checksum_agent_guards_every_load_through_the_load_api(tmp_path: Path) -> None:
    """Triton's checksum agent: a right MD5 loads; after the file changes, a load (HTTP and gRPC) is refused
    naming the file while the loaded version keeps serving; an unknown agent or algorithm is a 400 naming it."""
    import hashlib

    repo = tmp_path / "repo"
    folder = model_folder(repo, "batched", BATCHED, {"1/model.onnx": (["batch", 4], 2.0)})
    md5 = hashlib.md5((folder / "1" / "model.onnx").read_bytes(), usedforsecurity=False).hexdigest()
    config = folder / "config.pbtxt"
    config.write_text(BATCHED + _agent("checksum", {"MD5:1/model.onnx": md5}))
    with start_server(repo, model_control_mode="explicit", load_models=["batched"]) as server:
        http = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
        grpc = triton_grpc.InferenceServerClient(server.grpc_url)
        assert http.is_model_ready("batched")
        scale_graph(folder / "1" / "model.onnx", ["batch", 4], 3.0)  # changed after the checksum was taken
        # Triton answers a failed load with 400 / INVALID_ARGUMENT; the loaded version keeps serving.
        for client, status in ((http, "400"), (grpc, "StatusCode.INVALID_ARGUMENT")):
            with pytest.raises(InferenceServerException) as err:
                client.load_model("batched")
            assert "1/model.onnx has MD5" in err.value.message() and f"expected {md5}" in err.value.message()
            assert err.value.status() == status
        assert http.is_model_ready("batched")
        for text, named in (
            (BATCHED + _agent("decrypt", {"key": "k"}), "agent 'decrypt' is not supported"),
            (BATCHED + _agent("checksum", {"SHA1:1/model.onnx": md5}), "expected MD5:<file"),
        ):
            config.write_text(text)
            with pytest.raises(InferenceServerException) as err:
                http.load_model("batched")
            assert err.value.status() == "400" and named in err.value.message(), err.value.message()
        assert http.is_server_live()

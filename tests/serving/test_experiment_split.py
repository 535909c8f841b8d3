"""A/B experiments in `slipway serve`: two versions behind one model name, a sticky split, per-variant metrics,
persistence across restarts and stop semantics.

Real tritonclient (HTTP and gRPC) against a real server on 127.0.0.1. The repository holds `digits` in two
versions exported from different seeds (so their answers differ), written with `write_model` as the packaging
step writes them (digests verify); each test that changes it works on its own copy.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families
from serving_helpers import INPUT_SHAPE, digits_cnn, images
from torch import nn
from tritonclient.utils import InferenceServerException

from slipway.compression.onnx_export import export_onnx
from slipway.core.config import TritonConfig
from slipway.core.errors import ConfigError, InferenceClientError, NotFoundError, SlipwayError
from slipway.experiments.spec import assign
from slipway.serving.client import InferenceClient
from slipway.serving.experiment import EXPERIMENT_FILE
from slipway.serving.loader import load_model_dir
from slipway.serving.server import ServerHandle, start_server
from slipway.serving.service import ServerOptions
from slipway.serving.triton_repository import write_model

OPTIONS = ServerOptions(max_queue=64, timeout_s=10.0, max_body_bytes=1 << 20, shutdown_grace_s=1.0)
MODEL = "digits"
SPEC = {"name": "ab1", "model": MODEL, "a": "1", "b": "2", "b_share": 0.3}
X = images(1, seed=11)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def ab_repo(tmp_path_factory: pytest.TempPathFactory, onnx_model: Path) -> Path:
    """digits versions 1 and 2 (another seed: different answers), and direct with version 1 only."""
    root = tmp_path_factory.mktemp("ab")
    challenger = digits_cnn()
    torch.manual_seed(1)
    for param in challenger.parameters():
        nn.init.normal_(param, std=0.2)
    second = root / "export-2" / "model.onnx"
    second.parent.mkdir()
    export_onnx(challenger, INPUT_SHAPE, second)
    repo = root / "repo"
    triton = TritonConfig(max_batch_size=64, max_queue_delay_us=2000)
    write_model(repo, MODEL, onnx_model, triton, version=1)
    write_model(repo, MODEL, second, triton, version=2)
    write_model(
        repo,
        "direct",
        onnx_model,
        TritonConfig(max_batch_size=8, preferred_batch_sizes=[], dynamic_batching=False),
    )
    return repo


@pytest.fixture(scope="module")
def references(ab_repo: Path) -> dict[str, ort.InferenceSession]:
    """In-process ONNX Runtime on each version's file: what the version that answered must give."""
    return {
        version: ort.InferenceSession(
            str(ab_repo / MODEL / version / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        for version in ("1", "2")
    }


def fresh_repo(ab_repo: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ab_repo, tmp_path / "repo"))


def explicit(repo: Path) -> ServerHandle:
    return start_server(repo, threads=1, options=OPTIONS, model_control_mode="explicit", load_models=[MODEL])


@pytest.fixture(scope="module")
def running(ab_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """Explicit mode, digits serving version 2 when experiment ab1 (A = 1, B = 2, 30% to B) starts."""
    repo = Path(shutil.copytree(ab_repo, tmp_path_factory.mktemp("running") / "repo"))
    with explicit(repo) as handle:
        with InferenceClient(handle.url) as client:
            status = client.start_experiment(MODEL, SPEC)
        assert status["spec"]["started_at"] > 0 and status["variants"]["b"]["version"] == "2"
        yield handle


def http_client(server: ServerHandle) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(server.url.removeprefix("http://"))


def infer_http(
    client: triton_http.InferenceServerClient, x: np.ndarray = X, version: str = "", **kwargs: Any
) -> tuple[dict[str, Any], np.ndarray]:
    tensor = triton_http.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    result = client.infer(MODEL, [tensor], model_version=version, **kwargs)
    return result.get_response(), result.as_numpy("logits")


def infer_grpc(
    client: triton_grpc.InferenceServerClient, x: np.ndarray = X, **kwargs: Any
) -> tuple[Any, np.ndarray]:
    tensor = triton_grpc.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(MODEL, [tensor], **kwargs)
    return result.get_response(), result.as_numpy("logits")


def experiment_series(server: ServerHandle) -> dict[tuple[str, str], float]:
    """(variant, code) -> slipway_experiment_requests_total of digits/ab1; ("count", variant) from the histogram."""
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
        for sample in family.samples:
            if sample.labels.get("experiment") != "ab1" or sample.labels.get("model") != MODEL:
                continue
            if sample.name == "slipway_experiment_requests_total":
                out[sample.labels["variant"], sample.labels["code"]] = sample.value
            elif sample.name == "slipway_experiment_request_duration_seconds_count":
                out["count", sample.labels["variant"]] = sample.value
    return out


def test_split_is_sticky_close_to_b_share_and_names_the_variant(
    running: ServerHandle, references: dict[str, ort.InferenceSession]
) -> None:
    client = http_client(running)
    expected_logits = {v: session.run(["logits"], {"input": X})[0] for v, session in references.items()}
    assert not np.allclose(expected_logits["1"], expected_logits["2"])  # the answer tells who answered
    ids = [f"user-{i}" for i in range(400)]
    answered = {}
    for request_id in ids:
        response, logits = infer_http(client, request_id=request_id)
        version, params = response["model_version"], response["parameters"]
        assert params["experiment"] == "ab1" and {"a": "1", "b": "2"}[params["variant"]] == version
        np.testing.assert_allclose(logits, expected_logits[version], rtol=1e-5, atol=1e-6)
        answered[request_id] = version
    expected = {i: "2" if assign("ab1", i, 0.3) == "b" else "1" for i in ids}
    assert answered == expected  # deterministic: the variant is a hash of (experiment, key)
    share_b = Counter(answered.values())["2"] / len(ids)
    assert 0.3 - 0.07 < share_b < 0.3 + 0.07, share_b  # 400 keys at b_share 0.3: sd 0.023
    for request_id in ids[:20]:  # sticky: the same id again, over HTTP and gRPC
        assert infer_http(client, request_id=request_id)[0]["model_version"] == answered[request_id]
    grpc_client = triton_grpc.InferenceServerClient(running.grpc_url)
    for request_id in ids[20:40]:
        response, _ = infer_grpc(grpc_client, request_id=request_id)
        params = {k: v.string_param for k, v in response.parameters.items()}
        assert response.model_version == answered[request_id] and response.id == request_id
        assert params == {"experiment": "ab1", "variant": "a" if answered[request_id] == "1" else "b"}


def test_experiment_key_parameter_and_header_override_the_request_id(running: ServerHandle) -> None:
    client = http_client(running)
    grpc_client = triton_grpc.InferenceServerClient(running.grpc_url)
    key_b = next(f"key-{i}" for i in range(100) if assign("ab1", f"key-{i}", 0.3) == "b")
    ids_a = [f"id-{i}" for i in range(100) if assign("ab1", f"id-{i}", 0.3) == "a"][:5]
    for request_id in ids_a:
        by_param, _ = infer_http(client, request_id=request_id, parameters={"experiment_key": key_b})
        by_header, _ = infer_http(client, request_id=request_id, headers={"slipway-experiment-key": key_b})
        by_grpc, _ = infer_grpc(grpc_client, request_id=request_id, parameters={"experiment_key": key_b})
        by_id, _ = infer_http(client, request_id=request_id)
        assert by_param["model_version"] == by_header["model_version"] == by_grpc.model_version == "2"
        assert by_param["parameters"]["variant"] == "b" and by_id["model_version"] == "1"
    for bad in (7, ""):  # a key that is not a non-empty string: 400 naming the parameter
        with pytest.raises(InferenceServerException, match="parameter experiment_key must be") as err:
            infer_http(client, parameters={"experiment_key": bad})
        assert err.value.status() == "400"
    with pytest.raises(InferenceServerException, match="experiment_key must be a non-empty") as err:
        infer_grpc(grpc_client, parameters={"experiment_key": 7})
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    # Without any key a request is assigned at random: both variants answer.
    seen = {infer_http(client)[0]["model_version"] for _ in range(60)}
    assert seen == {"1", "2"}


def test_a_version_in_the_path_bypasses_the_split(running: ServerHandle) -> None:
    client = http_client(running)
    before = experiment_series(running)
    for version in ("1", "2"):
        for i in range(5):
            response, _ = infer_http(client, version=version, request_id=f"user-{i}")
            assert response["model_version"] == version and "parameters" not in response
    grpc_client = triton_grpc.InferenceServerClient(running.grpc_url)
    tensor = triton_grpc.InferInput("input", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    response = grpc_client.infer(MODEL, [tensor], model_version="1").get_response()
    assert response.model_version == "1" and not response.parameters
    assert experiment_series(running) == before  # outside the split: not counted for a variant
    with pytest.raises(InferenceServerException, match=r"version '3' is not loaded \(loaded: 1, 2\)") as err:
        infer_http(client, version="3")
    assert err.value.status() == "400"


def test_metrics_stats_metadata_and_status_show_both_variants(running: ServerHandle) -> None:
    client = http_client(running)
    bad = np.zeros((1, 2, 8, 8), np.float32)  # wrong dims: assigned first, then refused by validation
    wrong_key = next(f"bad-{i}" for i in range(100) if assign("ab1", f"bad-{i}", 0.3) == "b")
    with pytest.raises(InferenceServerException, match="does not match expected") as err:
        infer_http(client, bad, request_id=wrong_key)
    assert err.value.status() == "400"
    series = experiment_series(running)
    status = InferenceClient(running.url).experiment(MODEL)
    for variant in ("a", "b"):
        counts = status["variants"][variant]
        requests = sum(v for (var, code), v in series.items() if var == variant)
        errors = sum(v for (var, code), v in series.items() if var == variant and code != "200")
        assert counts["requests"] == requests == series["count", variant] > 0
        assert counts["errors"] == errors
    assert series["b", "400"] >= 1 and series["a", "200"] > series["b", "200"] > 0
    assert {key: status["spec"][key] for key in SPEC} == SPEC
    metrics = httpx.get(f"{running.url}/metrics").text
    bounds = {
        float(sample.labels["le"])
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "slipway_experiment_request_duration_seconds_bucket"
    }
    assert {0.001, 0.0015, 0.002, 0.01, 0.1, 1.0, 10.0} <= bounds  # fine enough for a p99 from 1 ms to 10 s
    assert 'slipway_inference_requests_total{model="digits",protocol="http"}' in metrics  # unchanged series

    stats = client.get_inference_statistics(MODEL)["model_stats"]
    assert [s["version"] for s in stats] == ["1", "2"]
    assert all(s["inference_stats"]["success"]["count"] > 0 for s in stats)
    only_2 = client.get_inference_statistics(MODEL, "2")["model_stats"]
    assert [s["version"] for s in only_2] == ["2"]
    assert client.get_model_metadata(MODEL)["versions"] == ["1", "2"]
    assert client.get_model_metadata(MODEL, "2")["versions"] == ["1", "2"]
    index = [(e["name"], e["version"]) for e in client.get_model_repository_index() if e.get("state")]
    assert index == [(MODEL, "1"), (MODEL, "2")]


def test_refusals_name_the_field_and_the_server_keeps_serving(running: ServerHandle) -> None:
    url = f"{running.url}/v2/models/{MODEL}/experiment"
    client = http_client(running)

    def refused(method: str, path: str, status: int, expected: str, **kwargs: Any) -> None:
        response = httpx.request(method, path, **kwargs)
        assert response.status_code == status and expected in response.json()["error"], response.text
        assert infer_http(client, request_id="still-there")[0]["model_version"] in ("1", "2")

    refused(
        "POST", url, 400, "experiment.b_share: Input should be less than 1", json={**SPEC, "b_share": 1.5}
    )
    refused("POST", url, 400, "experiment.colour: Extra inputs are not permitted", json={**SPEC, "colour": 1})
    refused("POST", url, 400, "experiment.name: String should match pattern", json={**SPEC, "name": "A B"})
    refused("POST", url, 400, "experiment.b: must differ from a", json={**SPEC, "b": "1"})
    refused(
        "POST",
        url,
        400,
        "experiment.model: 'direct' differs from the model in the path",
        json=SPEC | {"model": "direct"},
    )
    refused("POST", url, 400, "experiment: the request body is not valid JSON", content=b"{nope")
    refused("POST", url, 400, "experiment: expected an object, got list", json=[1])
    refused("POST", url, 400, "already runs experiment 'ab1' (A = version 1, B = version 2)", json=SPEC)
    refused(
        "POST",
        f"{running.url}/v2/models/direct/experiment",
        400,
        "experiment.b (version 2): model 'direct': no version 2 under",
        json=SPEC | {"model": "direct"},
    )
    refused("POST", f"{url}/stop", 400, "keep: expected 'a' or 'b', got 'c'", json={"keep": "c"})
    refused("POST", f"{url}/stop", 400, "stop: unrecognized field(s) ['why']", json={"keep": "a", "why": 1})
    refused("POST", f"{url}/stop", 400, "keep: required", json={})
    refused("GET", f"{running.url}/v2/models/direct/experiment", 404, "unknown model 'direct'")
    refused(
        "POST",
        f"{running.url}/v2/models/nope/experiment/stop",
        404,
        "unknown model 'nope'",
        json={"keep": "a"},
    )
    for call in (client.load_model, client.unload_model):
        with pytest.raises(InferenceServerException, match="runs experiment 'ab1'") as err:
            call(MODEL)
        assert err.value.status() == "400"
    grpc_client = triton_grpc.InferenceServerClient(running.grpc_url)
    with pytest.raises(InferenceServerException, match="stop it first") as err:
        grpc_client.load_model(MODEL)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    client.load_model("direct")  # loaded, but not in an experiment
    with InferenceClient(running.url) as slipway_client:
        with pytest.raises(NotFoundError, match="model 'direct' runs no experiment"):
            slipway_client.experiment("direct")
        with pytest.raises(InferenceClientError, match="400 keep: expected"):
            slipway_client.stop_experiment(MODEL, "z")
    with (
        InferenceClient(running.grpc_url, "grpc") as grpc_slipway,
        pytest.raises(SlipwayError, match="HTTP only"),
    ):
        grpc_slipway.experiment(MODEL)
    assert InferenceClient(running.url).experiment(MODEL)["spec"]["name"] == "ab1"


def test_mode_none_refuses_experiments(server: ServerHandle) -> None:
    response = httpx.post(f"{server.url}/v2/models/digits/experiment", json=SPEC)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "A/B experiment is not allowed in model control mode 'none'" in error
    assert "--model-control-mode explicit" in error
    stop = httpx.post(f"{server.url}/v2/models/digits/experiment/stop", json={"keep": "a"})
    assert stop.status_code == 400 and "--model-control-mode explicit" in stop.json()["error"]
    assert httpx.get(f"{server.url}/v2/models/digits/experiment").status_code == 404
    assert httpx.get(f"{server.url}/v2/models/digits").json()["versions"] == ["1"]
    response, _ = infer_http(http_client(server))
    assert response["model_version"] == "1" and "parameters" not in response  # still serving, as before


def test_stop_keeps_the_winner_and_deletes_a_newer_loser(ab_repo: Path, tmp_path: Path) -> None:
    repo = fresh_repo(ab_repo, tmp_path)
    with explicit(repo) as server, InferenceClient(server.url) as slipway_client:
        client = http_client(server)
        slipway_client.start_experiment(MODEL, SPEC)
        assert json.loads((repo / MODEL / EXPERIMENT_FILE).read_text())["name"] == "ab1"
        errors: list[BaseException] = []
        answered: list[str] = []
        stop = threading.Event()

        def traffic() -> None:  # keeps sending while the experiment stops: nothing may fail
            own = http_client(server)
            i = 0
            while not stop.is_set():
                try:
                    answered.append(infer_http(own, request_id=f"t-{i}")[0]["model_version"])
                except BaseException as err:
                    errors.append(err)
                    return
                i += 1

        sender = threading.Thread(target=traffic)
        sender.start()
        try:
            while len(set(answered)) < 2:
                threading.Event().wait(0.01)
            stopped = slipway_client.stop_experiment(MODEL, "b")  # B (2) is the newer: nothing deleted
            count = len(answered)
            while len(answered) < count + 20:
                threading.Event().wait(0.01)
        finally:
            stop.set()
            sender.join(timeout=15)
        assert not errors, errors
        assert stopped["kept"] == {"variant": "b", "version": "2"} and stopped["deleted_version_dir"] is None
        assert stopped["retired"] == {"variant": "a", "version": "1"} and stopped["spec"]["name"] == "ab1"
        assert answered[-1] == "2" and (repo / MODEL / "1").is_dir()
        assert not (repo / MODEL / EXPERIMENT_FILE).exists()
        assert client.get_model_metadata(MODEL)["versions"] == ["2"]
        assert "parameters" not in infer_http(client, request_id="user-1")[0]
        with pytest.raises(NotFoundError, match="runs no experiment"):
            slipway_client.experiment(MODEL)
        with pytest.raises(NotFoundError, match="404 model 'digits' runs no experiment"):
            slipway_client.stop_experiment(MODEL, "a")

        slipway_client.start_experiment(MODEL, {**SPEC, "name": "ab2"})  # B reuses the served version 2
        stopped = slipway_client.stop_experiment(MODEL, "a")  # the loser, 2, is newer: deleted
        assert stopped["deleted_version_dir"] == str(repo / MODEL / "2")
        assert not (repo / MODEL / "2").exists() and sorted(p.name for p in (repo / MODEL).iterdir()) == [
            "1",
            "config.pbtxt",
        ]
        client.load_model(MODEL)  # a reload takes the newest version on disk: the winner
        assert infer_http(client)[0]["model_version"] == "1"
        assert client.get_model_metadata(MODEL)["versions"] == ["1"]


def test_a_restarted_server_resumes_the_split(ab_repo: Path, tmp_path: Path) -> None:
    repo = fresh_repo(ab_repo, tmp_path)
    ids = [f"user-{i}" for i in range(40)]
    with explicit(repo) as server:
        started = InferenceClient(server.url).start_experiment(MODEL, SPEC)
        client = http_client(server)
        before = {i: infer_http(client, request_id=i)[0]["model_version"] for i in ids}
    assert set(before.values()) == {"1", "2"}
    with explicit(repo) as server:  # restarted mid-experiment: experiment.json is read at startup
        status = InferenceClient(server.url).experiment(MODEL)
        assert status["spec"] == started["spec"]  # started_at kept
        assert status["variants"]["a"]["requests"] == 0  # counts restart with the server, like Prometheus
        client = http_client(server)
        assert {i: infer_http(client, request_id=i)[0]["model_version"] for i in ids} == before
    with start_server(repo, threads=1, options=OPTIONS) as server:  # mode none also serves the split
        assert http_client(server).get_model_metadata(MODEL)["versions"] == ["1", "2"]
        assert infer_http(http_client(server), request_id=ids[0])[0]["model_version"] == before[ids[0]]
        stop = httpx.post(f"{server.url}/v2/models/{MODEL}/experiment/stop", json={"keep": "a"})
        assert stop.status_code == 400 and "--model-control-mode explicit" in stop.json()["error"]


def test_an_unusable_experiment_file_refuses_the_start(ab_repo: Path, tmp_path: Path) -> None:
    repo = fresh_repo(ab_repo, tmp_path)
    path = repo / MODEL / EXPERIMENT_FILE
    where = re.escape(str(path))
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=f"{where}: not a readable experiment"):
        explicit(repo)
    path.write_text(json.dumps({**SPEC, "b_share": 2}))
    with pytest.raises(ConfigError, match=rf"{where}: experiment\.b_share: Input should be less than 1"):
        start_server(repo, threads=1, options=OPTIONS)
    path.write_text(json.dumps({**SPEC, "b": "7"}))
    with pytest.raises(
        NotFoundError, match=rf"{where}: experiment\.b \(version 7\): .*versions there: \[1, 2\]"
    ):
        explicit(repo)
    with start_server(  # a model not loaded at startup does not read it; its load does, and refuses
        repo, threads=1, options=OPTIONS, model_control_mode="explicit", load_models=["direct"]
    ) as server:
        with pytest.raises(
            InferenceServerException, match=rf"{EXPERIMENT_FILE}: experiment\.b \(version 7\)"
        ):
            http_client(server).load_model(MODEL)
        path.write_text(json.dumps(SPEC))
        http_client(server).load_model(MODEL)  # now it resumes the split
        assert InferenceClient(server.url).experiment(MODEL)["spec"]["b"] == "2"


def test_load_model_dir_takes_a_version(ab_repo: Path) -> None:
    assert load_model_dir(ab_repo / MODEL).version == "2"
    assert load_model_dir(ab_repo / MODEL, version=1).version == "1"
    with pytest.raises(NotFoundError, match=r"no version 5 under .* \(versions there: \[1, 2\]\)"):
        load_model_dir(ab_repo / MODEL, version=5)

"""Every kind of bad input is a 400 / INVALID_ARGUMENT that names the problem, and the server keeps serving."""

from __future__ import annotations

import json
import math
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from serving_helpers import images
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from slipway.serving.server import ServerHandle

GOOD = images(1).ravel().tolist()


def tensor(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": GOOD}
    base.update(overrides)
    return base


NAN_DATA = [math.nan, *GOOD[1:]]
JSON_CASES = [
    ("unknown model", "nope", {"inputs": [tensor()]}, "unknown model 'nope'"),
    ("unknown input", "digits", {"inputs": [tensor(name="pixels")]}, "no input tensor 'pixels'"),
    ("missing input", "digits", {"inputs": []}, "non-empty 'inputs'"),
    (
        "unknown output",
        "digits",
        {"inputs": [tensor()], "outputs": [{"name": "probs"}]},
        "no output tensor 'probs'",
    ),
    ("wrong dtype", "digits", {"inputs": [tensor(datatype="FP64")]}, "datatype 'FP64' does not match"),
    ("wrong rank", "digits", {"inputs": [tensor(shape=[1, 64])]}, "has rank 2"),
    (
        "wrong dims",
        "digits",
        {"inputs": [tensor(shape=[1, 1, 8, 9])]},
        "does not match expected [-1, 1, 8, 8]",
    ),
    ("element count", "digits", {"inputs": [tensor(data=GOOD[:-1])]}, "63 elements, shape needs 64"),
    (
        "batch too big",
        "direct",
        {"inputs": [tensor(shape=[9, 1, 8, 8], data=GOOD * 9)]},
        "batch size 9 must lie in 1..8",
    ),
    ("zero batch", "digits", {"inputs": [tensor(shape=[0, 1, 8, 8], data=[])]}, "batch size 0"),
    ("strings as data", "digits", {"inputs": [tensor(data=["a"] * 64)]}, "expected FP32"),
    ("ragged data", "digits", {"inputs": [tensor(data=[[1.0], [1.0, 2.0]])]}, "not a regular list"),
    ("null data", "digits", {"inputs": [tensor(data=None)]}, "'data' must be a list"),
    ("float shape", "digits", {"inputs": [tensor(shape=[1.0, 1, 8, 8])]}, "non-negative integers"),
    ("duplicate input", "digits", {"inputs": [tensor(), tensor()]}, "given twice"),
    (
        "classification",
        "digits",
        {"inputs": [tensor()], "outputs": [{"name": "logits", "parameters": {"classification": 3}}]},
        "classification",
    ),
    ("bad timeout", "digits", {"inputs": [tensor()], "parameters": {"timeout": -5}}, "timeout"),
]


@pytest.mark.parametrize(("case", "model", "body", "needle"), JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_json_bad_input_is_400(
    server: ServerHandle, case: str, model: str, body: dict[str, Any], needle: str
) -> None:
    r = httpx.post(f"{server.url}/v2/models/{model}/infer", json=body)
    assert r.status_code == 400, (case, r.status_code, r.text)
    assert needle in r.json()["error"], r.json()["error"]


def test_nan_and_inf_accepted_by_default(server: ServerHandle) -> None:
    """As in Triton: non-finite floats are values like any other unless the model config opts in to refusing
    them (parameter reject_non_finite; tests/serving/test_triton_repositories.py covers the refusal)."""
    # json.dumps writes NaN; binary sends real IEEE NaN/Inf.
    r = httpx.post(
        f"{server.url}/v2/models/digits/infer", content=json.dumps({"inputs": [tensor(data=NAN_DATA)]})
    )
    assert r.status_code == 200, r.text
    x = images(1)
    x[0, 0, 0, 0] = np.inf
    r = binary_post(server, "digits", x.tobytes(), [1, 1, 8, 8])
    assert r.status_code == 200, r.text


def binary_post(
    server: ServerHandle,
    model: str,
    blob: bytes,
    shape: list[int],
    size: int | None = None,
    header_len: str | None = None,
) -> httpx.Response:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": shape,
                    "parameters": {"binary_data_size": len(blob) if size is None else size},
                }
            ]
        }
    ).encode()
    return httpx.post(
        f"{server.url}/v2/models/{model}/infer",
        content=header + blob,
        headers={"Inference-Header-Content-Length": header_len or str(len(header))},
    )


@pytest.mark.parametrize(
    ("blob_len", "size", "header_len", "needle"),
    [
        (255, None, None, "255 bytes of data, but shape [1, 1, 8, 8] FP32 needs 256"),
        (256, 300, None, "binary_data_size 300 exceeds"),
        (260, 256, None, "4 binary bytes after the JSON header belong to no input"),
        (256, None, "99999", "Inference-Header-Content-Length"),
        (256, None, "abc", "Inference-Header-Content-Length"),
        (256, None, "\u00b2".encode("latin-1"), "Inference-Header-Content-Length"),  # isdigit, yet not int()
        (256, None, "9" * 5000, "Inference-Header-Content-Length"),
        (256, None, "10", "not valid JSON"),
    ],
)
def test_binary_bad_input_is_400(
    server: ServerHandle, blob_len: int, size: int | None, header_len: str | None, needle: str
) -> None:
    r = binary_post(server, "digits", b"\0" * blob_len, [1, 1, 8, 8], size, header_len)
    assert r.status_code == 400 and needle in r.json()["error"], r.text


def test_body_over_limit_is_413(server: ServerHandle) -> None:
    r = httpx.post(f"{server.url}/v2/models/digits/infer", content=b"x" * (2 << 20))
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]


def test_unknown_model_metadata_is_404(server: ServerHandle) -> None:
    r = httpx.get(f"{server.url}/v2/models/nope")
    assert r.status_code == 404 and "unknown model 'nope'" in r.json()["error"]
    r = httpx.get(f"{server.url}/v2/models/digits/versions/7/config")
    assert r.status_code == 404 and "version '7' is not loaded" in r.json()["error"]


GRPC_CASES = [
    ("unknown model", dict(model_name="nope"), "unknown model"),
    ("unknown input", dict(name="pixels"), "no input tensor 'pixels'"),
    ("wrong dtype", dict(datatype="INT32"), "does not match the model's FP32"),
    ("wrong shape", dict(shape=[1, 8, 8]), "rank 3"),
    ("byte length", dict(raw=b"\0" * 12), "12 bytes of data"),
    ("batch too big", dict(model_name="direct", shape=[9, 1, 8, 8], raw=b"\0" * 256 * 9), "batch size 9"),
    ("fp16 typed", dict(datatype="FP16", typed=True), "needs raw_input_contents"),
]


@pytest.mark.parametrize(("case", "spec", "needle"), GRPC_CASES, ids=[c[0] for c in GRPC_CASES])
def test_grpc_bad_input_is_invalid_argument(
    server: ServerHandle, case: str, spec: dict[str, Any], needle: str
) -> None:
    request = pb.ModelInferRequest(model_name=spec.get("model_name", "digits"))
    request.inputs.add(
        name=spec.get("name", "input"),
        datatype=spec.get("datatype", "FP32"),
        shape=spec.get("shape", [1, 1, 8, 8]),
    )
    if not spec.get("typed"):
        request.raw_input_contents.append(spec.get("raw", images(1).tobytes()))
    with grpc.insecure_channel(server.grpc_url) as channel, pytest.raises(grpc.RpcError) as info:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
    assert needle in info.value.details()


def test_grpc_unknown_model_metadata_is_not_found(server: ServerHandle) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel, pytest.raises(grpc.RpcError) as info:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
            pb.ModelMetadataRequest(name="nope"), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_still_serving_after_bad_input(server: ServerHandle) -> None:
    """Runs after the cases above (same module server): a good request still succeeds."""
    r = httpx.post(f"{server.url}/v2/models/digits/infer", json={"inputs": [tensor()]})
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1, 10]
    stats = httpx.get(f"{server.url}/v2/models/digits/stats").json()["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] >= 1

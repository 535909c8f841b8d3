"""Fuzzed requests over real HTTP and gRPC to 127.0.0.1: never a 500, never a dead server (bounded examples)."""

from __future__ import annotations

import json
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from slipway.serving.server import ServerHandle

ALLOWED = {200, 400, 404, 405, 413, 503}
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=5)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)
shapes = st.one_of(
    st.lists(st.integers(-3, 70), min_size=0, max_size=5),
    st.just([1, 1, 8, 8]),
    st.just([2, 1, 8, 8]),
    json_values,
)
data = st.one_of(
    st.lists(st.floats(width=32, allow_nan=True), min_size=0, max_size=130),
    st.just([0.5] * 64),
    st.just([[0.5] * 64]),
    json_values,
)
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["input", "logits", "x", ""]) | st.text(max_size=4),
        "datatype": st.sampled_from(["FP32", "FP16", "FP64", "INT64", "BYTES", "BOOL", "fp32", ""]),
        "shape": shapes,
        "data": data,
    },
    optional={
        "parameters": st.dictionaries(st.sampled_from(["binary_data_size", "x"]), json_values, max_size=2)
    },
)
requests = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=3) | json_values},
    optional={
        "outputs": st.lists(
            st.fixed_dictionaries({"name": st.sampled_from(["logits", "nope"]) | json_values})
        )
        | json_values,
        "parameters": st.dictionaries(
            st.sampled_from(["binary_data_output", "timeout", "classification"]), json_values, max_size=2
        ),
        "id": json_values,
    },
)


@pytest.fixture(scope="module")
def client(server: ServerHandle) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


@FUZZ
@given(body=requests, model=st.sampled_from(["digits", "direct", "pair", "nope"]))
def test_fuzzed_json_requests(client: httpx.Client, body: dict[str, Any], model: str) -> None:
    r = client.post(f"/v2/models/{model}/infer", content=json.dumps(body).encode())
    assert r.status_code in ALLOWED, (r.status_code, r.text)
    if r.status_code != 200:
        assert r.json()["error"]


@FUZZ
@given(
    header=st.binary(max_size=200) | requests.map(lambda b: json.dumps(b).encode()),
    blob=st.binary(max_size=600),
    header_len=st.one_of(
        st.none(),
        st.integers(-5, 900).map(str),
        st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=4),
    ),
)
def test_fuzzed_binary_requests(
    client: httpx.Client, header: bytes, blob: bytes, header_len: str | None
) -> None:
    headers = {"Inference-Header-Content-Length": header_len if header_len is not None else str(len(header))}
    r = client.post("/v2/models/digits/infer", content=header + blob, headers=headers)
    assert r.status_code in ALLOWED, (r.status_code, r.text)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    name=st.sampled_from(["input", "x"]),
    datatype=st.sampled_from(["FP32", "FP16", "INT32", "BYTES", ""]),
    shape=st.lists(st.integers(-(2**40), 2**40) | st.integers(0, 9), max_size=5),
    raw=st.lists(st.binary(max_size=600), max_size=2),
    floats=st.lists(st.floats(width=32), max_size=70),
)
def test_fuzzed_grpc_requests(
    server: ServerHandle, name: str, datatype: str, shape: list[int], raw: list[bytes], floats: list[float]
) -> None:
    request = pb.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
    if raw:
        request.raw_input_contents.extend(raw)
    else:
        tensor.contents.fp32_contents.extend(floats)
    with grpc.insecure_channel(server.grpc_url) as channel:
        try:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
        except grpc.RpcError as err:
            assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAVAILABLE), err


def test_server_alive_after_fuzzing(client: httpx.Client) -> None:
    assert client.get("/v2/health/ready").status_code == 200
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.0] * 64}]}
    assert client.post("/v2/models/digits/infer", json=body).status_code == 200
    assert 'code="500"' not in client.get("/metrics").text

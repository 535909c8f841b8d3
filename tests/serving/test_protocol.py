"""tritonclient (HTTP JSON, HTTP binary, gRPC) against the local server: every call Triton clients make."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from serving_helpers import images

from slipway.serving.server import ServerHandle, start_server
from slipway.serving.service import ServerOptions


@pytest.fixture(scope="module")
def http_client(server: ServerHandle) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(server.url.removeprefix("http://"))


@pytest.fixture(scope="module")
def grpc_client(server: ServerHandle) -> triton_grpc.InferenceServerClient:
    return triton_grpc.InferenceServerClient(server.grpc_url)


def expected(reference: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return reference.run(["logits"], {"input": x})[0]


def test_health_and_metadata_http(http_client: triton_http.InferenceServerClient) -> None:
    assert http_client.is_server_live()
    assert http_client.is_server_ready()
    assert http_client.is_model_ready("digits")
    assert not http_client.is_model_ready("nope")
    meta = http_client.get_model_metadata("digits")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    server_meta = http_client.get_server_metadata()
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(server_meta["extensions"])


def test_config_http_matches_repository(http_client: triton_http.InferenceServerClient) -> None:
    config = http_client.get_model_config("digits")
    assert config["name"] == "digits" and config["max_batch_size"] == 64
    assert config["input"][0]["dims"] == [1, 8, 8] and config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
    assert "dynamic_batching" not in http_client.get_model_config("direct")
    assert http_client.get_model_config("pair")["instance_group"][0]["count"] == 2


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", ["digits", "direct", "pair"])
def test_infer_http_equals_onnxruntime(
    http_client: triton_http.InferenceServerClient, reference: ort.InferenceSession, binary: bool, model: str
) -> None:
    x = images(5, seed=1)
    tensor = triton_http.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    out = triton_http.InferRequestedOutput("logits", binary_data=binary)
    headers = None if binary else {"Content-Type": "application/json"}
    result = http_client.infer(model, [tensor], outputs=[out], headers=headers, request_id="r-1")
    np.testing.assert_allclose(result.as_numpy("logits"), expected(reference, x), rtol=1e-5, atol=1e-6)
    assert result.get_response()["id"] == "r-1"


def test_infer_json_without_content_type(server: ServerHandle, reference: ort.InferenceSession) -> None:
    x = images(2, seed=2)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 1, 8, 8], "data": x.tolist()}]}
    import json

    r = httpx.post(f"{server.url}/v2/models/digits/infer", content=json.dumps(body).encode())
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["shape"] == [2, 10]
    np.testing.assert_allclose(
        np.array(out["data"]).reshape(2, 10), expected(reference, x), rtol=1e-5, atol=1e-6
    )


def test_grpc_health_metadata_config(grpc_client: triton_grpc.InferenceServerClient) -> None:
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    assert grpc_client.is_model_ready("digits")
    meta = grpc_client.get_model_metadata("digits")
    assert list(meta.inputs[0].shape) == [-1, 1, 8, 8] and meta.inputs[0].datatype == "FP32"
    config = grpc_client.get_model_config("digits").config
    assert config.max_batch_size == 64 and config.input[0].name == "input"
    assert grpc_client.get_server_metadata().name == "slipway"


@pytest.mark.parametrize("model", ["digits", "direct", "pair"])
def test_infer_grpc_raw_equals_onnxruntime(
    grpc_client: triton_grpc.InferenceServerClient, reference: ort.InferenceSession, model: str
) -> None:
    x = images(3, seed=3)
    tensor = triton_grpc.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = grpc_client.infer(model, [tensor], outputs=[triton_grpc.InferRequestedOutput("logits")])
    np.testing.assert_allclose(result.as_numpy("logits"), expected(reference, x), rtol=1e-5, atol=1e-6)


def test_infer_grpc_typed_contents(server: ServerHandle, reference: ort.InferenceSession) -> None:
    """Typed `fp32_contents` instead of raw bytes (what non-Python clients often send)."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    x = images(2, seed=4)
    request = pb.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    with grpc.insecure_channel(server.grpc_url) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    out = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(
        list(response.outputs[0].shape)
    )
    np.testing.assert_allclose(out, expected(reference, x), rtol=1e-5, atol=1e-6)


def test_grpc_health_service(server: ServerHandle) -> None:
    """The standard grpc.health.v1 service, as Kubernetes gRPC probes and grpc_health_probe call it."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    serving = health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == serving
        named = health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
        assert stub.Check(named, timeout=5).status == serving
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_health_watch_sees_not_serving_on_shutdown(model_repo: Path) -> None:
    """A Watch stream (what a load balancer holds open) is told NOT_SERVING before the server goes away."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    options = ServerOptions(max_queue=8, timeout_s=5.0, max_body_bytes=1 << 20, shutdown_grace_s=1.0)
    handle = start_server(model_repo, threads=1, options=options)
    try:
        with grpc.insecure_channel(handle.grpc_url) as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=20
            )
            assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
            handle.stop()
            assert next(stream).status == health_pb2.HealthCheckResponse.NOT_SERVING
            stream.cancel()
    finally:
        handle.stop()


def test_grpc_reflection_lets_a_client_without_protos_call(server: ServerHandle) -> None:
    """What grpcurl does: discover the services over reflection, build messages from those descriptors, call."""
    import grpc
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(server.grpc_url) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindServiceByName("inference.GRPCInferenceService").methods_by_name["ModelMetadata"]
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelMetadata",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        response = call(request_cls(name="digits"), timeout=5)
    assert response.name == "digits" and list(response.inputs[0].shape) == [-1, 1, 8, 8]


def test_statistics_and_index(
    http_client: triton_http.InferenceServerClient, grpc_client: triton_grpc.InferenceServerClient
) -> None:
    x = images(4, seed=5)
    tensor = triton_http.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    before = http_client.get_inference_statistics("direct")["model_stats"][0]
    http_client.infer("direct", [tensor])
    after = http_client.get_inference_statistics("direct")["model_stats"][0]
    assert after["inference_count"] == before["inference_count"] + 4
    assert after["execution_count"] == before["execution_count"] + 1
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    assert any(b["batch_size"] == 4 for b in after["batch_stats"])
    grpc_stats = grpc_client.get_inference_statistics("direct")
    assert grpc_stats.model_stats[0].inference_count == after["inference_count"]
    names = [m["name"] for m in http_client.get_model_repository_index()]
    assert names == ["digits", "direct", "pair"]
    assert [m.name for m in grpc_client.get_model_repository_index().models] == names
    all_stats = http_client.get_inference_statistics()
    assert [m["name"] for m in all_stats["model_stats"]] == names


def test_metrics_endpoint_counts_requests(
    server: ServerHandle, http_client: triton_http.InferenceServerClient
) -> None:
    x = images(1)
    tensor = triton_http.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    http_client.infer("digits", [tensor])
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "slipway_inference_requests_total",
        "slipway_inference_latency_seconds_bucket",
        "slipway_batch_size_bucket",
        "slipway_queue_depth",
    ):
        assert f"{name}{{" in text, name
    assert 'slipway_inference_requests_total{model="digits",protocol="http"}' in text

"""Triton's restricted APIs on `slipway serve`: the flags' syntax, and real servers called by real tritonclient.

Two servers split Triton's groups between HTTP and gRPC the opposite way round, so that every group is seen
both restricted (refused without the key or with a wrong one, served with it) and open (served without a key)
on both protocols.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_helpers import images
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from slipway.core.errors import ConfigError
from slipway.serving import restricted as rs
from slipway.serving.grpc_app import INFERENCE_SERVICE_NAME, METHOD_GROUPS
from slipway.serving.server import ServerHandle, start_server
from slipway.serving.service import ServerOptions

SECRET = "s3cr:et=with-delims"  # holds Triton's delimiters: the value is everything after the first '='
WRONG = "not-the-secret"
SET_A = ("health", "inference", "model-repository")
SET_B = ("metadata", "model-config", "statistics", "shared-memory")
Call = Callable[[dict[str, str]], Any]


# --- the flags -------------------------------------------------------------------------------------------


def test_parse_groups_keys_and_values() -> None:
    parsed = rs.parse_restricted(
        ["health,metadata:Infer-Key=a:b=c", "model-repository:admin-key=x"], rs.HTTP_FLAG, rs.SERVE_GROUPS
    )
    assert sorted(parsed.groups) == ["health", "metadata", "model-repository"]
    health = parsed.restriction("health")
    assert health is not None and health.header == "infer-key" and health.value == "a:b=c"
    assert parsed.restriction("inference") is None and not rs.parse_restricted(
        [], rs.HTTP_FLAG, rs.SERVE_GROUPS
    )
    assert rs.parse_restricted(parsed.flag_values(), rs.HTTP_FLAG, rs.SERVE_GROUPS) == parsed
    assert "a:b=c" not in repr(parsed) and "a:b=c" not in parsed.summary()
    assert parsed.summary() == "health,metadata need header infer-key; model-repository need header admin-key"
    grpc_side = rs.parse_restricted(["inference:k=v"], rs.GRPC_FLAG, rs.SERVE_GROUPS, rs.GRPC_HEADER_PREFIX)
    assert grpc_side.headers("inference") == {"triton-grpc-protocol-k": "v"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("health", "expected GROUP[,GROUP...]:KEY=VALUE"),
        ("health:key", "no '=' between KEY and VALUE"),
        (":key=SECRETVALUE", "no group before ':'"),
        ("health:=SECRETVALUE", "an empty KEY"),
        ("health:key=", "an empty VALUE"),
        ("health,,metadata:key=SECRETVALUE", "an empty group name"),
        ("healthz:key=SECRETVALUE", "unknown group 'healthz'; expected one of health, metadata"),
        ("health:bad key=SECRETVALUE", "header key 'bad key' must be letters"),
        ("health:key=SECRET VALUE", "must be visible ASCII characters without spaces"),
        ("health:key=SECRETVALUÉ", "must be visible ASCII characters without spaces"),
    ],
)
def test_bad_values_name_the_flag_and_the_form_never_the_secret(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        rs.parse_restricted([value], rs.HTTP_FLAG, rs.SERVE_GROUPS)
    assert str(err.value).startswith("--http-restricted-api: ") and message in str(err.value)
    assert "SECRET" not in str(err.value).replace("=SECRET", "")  # only the example in the form says SECRET
    assert err.value.exit_code == 2


def test_a_group_in_two_flags_and_binary_grpc_keys_are_refused() -> None:
    with pytest.raises(
        ConfigError, match="group 'health' is named in more than one --grpc-restricted-protocol"
    ):
        rs.parse_restricted(["health,metadata:k1=v1", "health:k2=v2"], rs.GRPC_FLAG, rs.SERVE_GROUPS, "p-")
    with pytest.raises(ConfigError, match="must not end in '-bin'"):
        rs.parse_restricted(["health:key-bin=v"], rs.GRPC_FLAG, rs.SERVE_GROUPS, rs.GRPC_HEADER_PREFIX)


def test_every_rpc_of_triton_service_has_its_group() -> None:
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert {f"/{INFERENCE_SERVICE_NAME}/{m.name}" for m in service.methods} <= set(METHOD_GROUPS)
    assert set(METHOD_GROUPS.values()) == set(rs.SERVE_GROUPS)


def test_cli_help_shows_both_flags() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "slipway", "serve", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    help_text = " ".join(out.stdout.split())
    for expected in (
        "--http-restricted-api GROUPS:KEY=VALUE",
        "--grpc-restricted-protocol GROUPS:KEY=VALUE",
        "triton-grpc-protocol-KEY",
        "SLIPWAY_HTTP_RESTRICTED_API",
    ):
        assert expected in help_text, expected


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--http-restricted-api", "inference", "expected GROUP[,GROUP...]:KEY=VALUE"),
        ("--grpc-restricted-protocol", "nope:k=TOPSECRET", "unknown group 'nope'"),
    ],
)
def test_cli_bad_value_exits_2_naming_the_flag(tmp_path: Path, flag: str, value: str, message: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "slipway", "serve", str(tmp_path), f"{flag}={value}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(f"error: {flag}: ") and message in out.stderr
    assert "TOPSECRET" not in out.stderr


# --- real servers ------------------------------------------------------------------------------------------


def _options(http_groups: tuple[str, ...], grpc_groups: tuple[str, ...]) -> ServerOptions:
    return ServerOptions(
        max_queue=16,
        timeout_s=10.0,
        max_body_bytes=1 << 20,
        shutdown_grace_s=1.0,
        http_restricted=rs.parse_restricted(
            [f"{','.join(http_groups)}:Admin-Key={SECRET}"], rs.HTTP_FLAG, rs.SERVE_GROUPS
        ),
        grpc_restricted=rs.parse_restricted(
            [f"{','.join(grpc_groups)}:admin-key={SECRET}"],
            rs.GRPC_FLAG,
            rs.SERVE_GROUPS,
            rs.GRPC_HEADER_PREFIX,
        ),
    )


@pytest.fixture(
    scope="module", params=[(SET_A, SET_B), (SET_B, SET_A)], ids=["http-A-grpc-B", "http-B-grpc-A"]
)
def restricted_server(request: pytest.FixtureRequest, model_repo: Path) -> Iterator[tuple[ServerHandle, Any]]:
    http_groups, grpc_groups = request.param
    with start_server(model_repo, threads=1, options=_options(http_groups, grpc_groups)) as handle:
        yield handle, request.param


def _http_calls(server: ServerHandle) -> dict[str, list[Call]]:
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    infer_input = triton_http.InferInput("input", [2, 1, 8, 8], "FP32")
    infer_input.set_data_from_numpy(images(2), binary_data=True)

    def true(ok: bool) -> None:  # tritonclient answers health with a bool: a refusal is a False
        if not ok:
            raise InferenceServerException("This API is restricted, expecting header (health answered False)")

    def experiment_status(headers: dict[str, str]) -> None:  # a Slipway extension: not in tritonclient
        answer = httpx.get(f"{server.url}/v2/models/digits/experiment", headers=headers, timeout=10)
        if answer.status_code != 200:
            raise InferenceServerException(answer.json()["error"], str(answer.status_code))

    return {
        "health": [
            lambda h: true(client.is_server_live(headers=h)),
            lambda h: true(client.is_server_ready(headers=h)),
            lambda h: true(client.is_model_ready("digits", headers=h)),
        ],
        "metadata": [
            lambda h: client.get_server_metadata(headers=h),
            lambda h: client.get_model_metadata("digits", headers=h),
        ],
        "inference": [lambda h: client.infer("digits", [infer_input], headers=h)],
        "model-config": [lambda h: client.get_model_config("digits", headers=h)],
        "statistics": [
            lambda h: client.get_inference_statistics("digits", headers=h),
            lambda h: client.get_inference_statistics(headers=h),
        ],
        "model-repository": [
            lambda h: client.get_model_repository_index(headers=h),
            lambda h: client.load_model("digits", headers=h),  # mode none: 503 from the handler itself
            experiment_status,  # no experiment running: 404 from the handler itself
        ],
    }


def _grpc_calls(server: ServerHandle) -> dict[str, list[Call]]:
    client = triton_grpc.InferenceServerClient(server.grpc_url)
    infer_input = triton_grpc.InferInput("input", [2, 1, 8, 8], "FP32")
    infer_input.set_data_from_numpy(images(2))

    def health_check(headers: dict[str, str]) -> None:  # the standard service, as Kubernetes probes call it
        with grpc.insecure_channel(server.grpc_url) as channel:
            try:
                health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), metadata=tuple(headers.items()), timeout=10
                )
            except grpc.RpcError as err:
                raise InferenceServerException(err.details(), str(err.code())) from None

    return {
        "health": [
            lambda h: client.is_server_live(headers=h),
            lambda h: client.is_server_ready(headers=h),
            lambda h: client.is_model_ready("digits", headers=h),
            health_check,
        ],
        "metadata": [
            lambda h: client.get_server_metadata(headers=h),
            lambda h: client.get_model_metadata("digits", headers=h),
        ],
        "inference": [lambda h: client.infer("digits", [infer_input], headers=h)],
        "model-config": [lambda h: client.get_model_config("digits", headers=h)],
        "statistics": [lambda h: client.get_inference_statistics("digits", headers=h)],
        "model-repository": [
            lambda h: client.get_model_repository_index(headers=h),
            lambda h: client.load_model("digits", headers=h),  # mode none: UNAVAILABLE from the handler
        ],
        # Not served here: admitted, the call reaches UNIMPLEMENTED; restricted, the key is asked for first.
        "shared-memory": [lambda h: client.get_system_shared_memory_status(headers=h)],
    }


def _outcome(call: Call, headers: dict[str, str]) -> str:
    """refused (Triton's restriction message), or passed (answered, or refused by the handler itself)."""
    try:
        call(headers)
    except InferenceServerException as err:
        return "refused" if "is restricted, expecting header" in str(err.message()) else "passed"
    return "passed"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_each_group_refused_without_key_and_served_with_it(
    restricted_server: tuple[ServerHandle, Any], protocol: str
) -> None:
    server, (http_groups, grpc_groups) = restricted_server
    restricted = http_groups if protocol == "http" else grpc_groups
    calls = _http_calls(server) if protocol == "http" else _grpc_calls(server)
    key = "admin-key" if protocol == "http" else "triton-grpc-protocol-admin-key"
    for group, group_calls in calls.items():
        for i, call in enumerate(group_calls):
            where = f"{protocol} {group} call {i}"
            assert _outcome(call, {key: SECRET}) == "passed", where
            if group in restricted:
                assert _outcome(call, {}) == "refused", where
                assert _outcome(call, {key: WRONG}) == "refused", where
                assert _outcome(call, {key: SECRET + "x"}) == "refused", where
                assert _outcome(call, {key.upper() if protocol == "http" else key: SECRET}) == "passed", where
            else:
                assert _outcome(call, {}) == "passed", where


def test_http_refusal_is_tritons_403_and_metrics_stay_open(
    restricted_server: tuple[ServerHandle, Any],
) -> None:
    server, (http_groups, _) = restricted_server
    path = "/v2/health/live" if "health" in http_groups else "/v2/models/digits/config"
    refused = httpx.get(server.url + path, timeout=10)
    assert refused.status_code == 403
    assert refused.json() == {"error": "This API is restricted, expecting header 'admin-key'"}
    assert httpx.get(server.url + path, headers={"Admin-Key": SECRET}, timeout=10).status_code == 200
    assert httpx.get(server.url + "/metrics", timeout=10).status_code == 200  # in no group, as in Triton
    assert httpx.get(server.url + "/v2/no/such/route", timeout=10).status_code == 404


def test_grpc_refusal_is_tritons_unavailable_for_streams_too(
    restricted_server: tuple[ServerHandle, Any],
) -> None:
    server, (_, grpc_groups) = restricted_server
    expected = "This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'"
    client = triton_grpc.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as unary:
        if "model-repository" in grpc_groups:
            client.get_model_repository_index(headers={"triton-grpc-protocol-admin-key": WRONG})
        else:
            client.get_model_config("digits")
    assert unary.value.status() == "StatusCode.UNAVAILABLE" and unary.value.message() == expected
    if "inference" not in grpc_groups:
        return
    with grpc.insecure_channel(server.grpc_url) as channel:
        stream = channel.stream_stream(  # ModelStreamInfer: a bidirectional stream, refused as a whole
            f"/{INFERENCE_SERVICE_NAME}/ModelStreamInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelStreamInferResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused_stream:
            list(stream(iter([pb.ModelInferRequest(model_name="digits")]), timeout=10))
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=10)
        with pytest.raises(grpc.RpcError) as refused_watch:  # Health/Watch: a server stream
            next(watch)
        admitted = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(),
            metadata=(("triton-grpc-protocol-admin-key", SECRET),),
            timeout=10,
        )
        assert next(admitted).status == health_pb2.HealthCheckResponse.SERVING
        admitted.cancel()
    for err in (refused_stream.value, refused_watch.value):
        assert err.code() == grpc.StatusCode.UNAVAILABLE and err.details() == expected


def test_open_by_default(server: ServerHandle) -> None:
    """No flag: every group open, as in Triton (the shared module server has no restriction)."""
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.get_model_repository_index() is not None


def test_subprocess_server_gets_the_setting_from_the_environment_not_argv(model_repo: Path) -> None:
    """`start_server(subprocess_mode=True)` hands the values over in the environment; readiness sends the key."""
    options = _options(("health", "inference"), ("model-repository",))
    with start_server(model_repo, threads=1, options=options, subprocess_mode=True) as handle:
        pid = handle.pid  # type: ignore[attr-defined]
        assert SECRET.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert httpx.get(f"{handle.url}/v2/health/ready", timeout=10).status_code == 403
        ready = httpx.get(f"{handle.url}/v2/health/ready", headers={"admin-key": SECRET}, timeout=10)
        assert ready.status_code == 200
        assert httpx.get(f"{handle.url}/v2/models/digits", timeout=10).status_code == 200
        grpc_client = triton_grpc.InferenceServerClient(handle.grpc_url)
        with pytest.raises(InferenceServerException, match="is restricted"):
            grpc_client.get_model_repository_index()
        assert grpc_client.get_model_repository_index(headers={"triton-grpc-protocol-admin-key": SECRET})


def test_startup_log_names_groups_and_headers_never_the_value(
    model_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="slipway.serving.server"),
        start_server(model_repo, threads=1, options=_options(SET_A, SET_B)),
    ):
        pass
    assert "health,inference,model-repository need header admin-key" in caplog.text
    assert "need header triton-grpc-protocol-admin-key" in caplog.text
    assert SECRET not in caplog.text

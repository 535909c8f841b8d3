"""Triton's model control API on `slipway serve`: modes, load/reload/unload, the index, and swaps without failures.

Real tritonclient (HTTP and gRPC) against a real server on 127.0.0.1; each test gets its own copy of the
repository because load/unload tests add and corrupt version directories.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from click.testing import CliRunner
from serving_helpers import images
from tritonclient.utils import InferenceServerException

from slipway.cli.serve import serve
from slipway.core.errors import ConfigError, NotFoundError
from slipway.serving import service as service_module
from slipway.serving.loader import SessionOptions, load_model_dir, load_repository, startup_models
from slipway.serving.server import ServerHandle, start_server
from slipway.serving.service import InferenceCore, ServerOptions

OPTIONS = ServerOptions(max_queue=64, timeout_s=10.0, max_body_bytes=1 << 20, shutdown_grace_s=1.0)


@pytest.fixture
def repo(model_repo: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_repo, tmp_path / "repo"))


@pytest.fixture
def explicit_server(repo: Path) -> Iterator[ServerHandle]:
    """Explicit mode with only `digits` loaded at startup."""
    with start_server(
        repo, threads=1, options=OPTIONS, model_control_mode="explicit", load_models=["digits"]
    ) as handle:
        yield handle


def add_version(repo: Path, model: str, version: int, corrupt: bool = False) -> Path:
    """Copy version 1 (file + sidecar) to a new version directory; `corrupt` flips a byte of the model file."""
    target = Path(shutil.copytree(repo / model / "1", repo / model / str(version)))
    if corrupt:
        model_file = target / "model.onnx"
        data = bytearray(model_file.read_bytes())
        data[-1] ^= 0xFF
        model_file.write_bytes(bytes(data))
    return target


def http_client(server: ServerHandle) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(server.url.removeprefix("http://"))


def infer_http(client: triton_http.InferenceServerClient, model: str, x: np.ndarray) -> dict:
    tensor = triton_http.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    return client.infer(model, [tensor]).get_response()


def index_of(client: triton_http.InferenceServerClient) -> dict[str, dict]:
    return {entry["name"]: entry for entry in client.get_model_repository_index()}


def test_none_mode_refuses_load_and_unload(server: ServerHandle) -> None:
    """As Triton: UNAVAILABLE (HTTP 503), "explicit model load / unload is not allowed ...", naming the flag."""
    client = http_client(server)
    for call in (client.load_model, client.unload_model):
        with pytest.raises(InferenceServerException) as err:
            call("digits")
        assert err.value.status() == "503" and "--model-control-mode explicit" in err.value.message()
        assert err.value.message().startswith("explicit model load / unload is not allowed")
    grpc_client = triton_grpc.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as err:
        grpc_client.load_model("digits")
    assert err.value.status() == "StatusCode.UNAVAILABLE"
    assert "not allowed in model control mode 'none'" in err.value.message()
    assert {e["name"]: e["state"] for e in client.get_model_repository_index()} == dict.fromkeys(
        ["digits", "direct", "pair"], "READY"
    )
    assert "model_repository" in client.get_server_metadata()["extensions"]


def test_startup_model_selection_follows_triton(repo: Path) -> None:
    assert startup_models(repo) == ["digits", "direct", "pair"]
    assert startup_models(repo, "explicit") == []
    assert startup_models(repo, "explicit", ["pair", "digits"]) == ["digits", "pair"]
    assert startup_models(repo, "explicit", ["*"]) == ["digits", "direct", "pair"]
    with pytest.raises(ConfigError, match="give it alone"):
        startup_models(repo, "explicit", ["*", "digits"])
    with pytest.raises(ConfigError, match="needs --model-control-mode explicit"):
        startup_models(repo, "none", ["digits"])
    with pytest.raises(NotFoundError, match=r"\['nope'\]: not in model repository"):
        startup_models(repo, "explicit", ["nope"])
    assert startup_models(repo, "poll") == ["digits", "direct", "pair"]
    with pytest.raises(ConfigError, match=r"needs --model-control-mode explicit \(in mode poll"):
        startup_models(repo, "poll", ["digits"])
    with pytest.raises(ConfigError, match="not one of none, explicit, poll"):
        startup_models(repo, "watch")


def test_explicit_mode_loads_named_models_and_unloads(explicit_server: ServerHandle) -> None:
    client = http_client(explicit_server)
    x = images(2, seed=3)
    index = index_of(client)
    assert index["digits"] == {"name": "digits", "version": "1", "state": "READY", "reason": ""}
    assert index["direct"] == {"name": "direct"} and index["pair"] == {"name": "pair"}  # never loaded
    assert not client.is_model_ready("direct")
    with pytest.raises(InferenceServerException, match="unknown model 'direct'") as err:
        infer_http(client, "direct", x)
    assert err.value.status() == "400"

    client.load_model("direct")
    assert client.is_model_ready("direct")
    assert infer_http(client, "direct", x)["model_version"] == "1"
    ready = [e["name"] for e in client.get_model_repository_index()]
    assert ready == ["digits", "direct", "pair"]
    filtered = httpx.post(f"{explicit_server.url}/v2/repository/index", json={"ready": True}).json()
    assert [e["name"] for e in filtered] == ["digits", "direct"]

    client.unload_model("digits")
    assert index_of(client)["digits"] == {
        "name": "digits",
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "unloaded",
    }
    assert not client.is_model_ready("digits")
    with pytest.raises(InferenceServerException, match="'digits' is not loaded") as err:
        infer_http(client, "digits", x)
    assert err.value.status() == "400"
    assert httpx.get(f"{explicit_server.url}/v2/models/digits").status_code == 404
    assert httpx.get(f"{explicit_server.url}/v2/models/digits/stats").status_code == 404
    assert [s["name"] for s in client.get_inference_statistics()["model_stats"]] == ["direct"]
    metrics = httpx.get(f"{explicit_server.url}/metrics").text
    assert 'slipway_queue_depth{model="direct"}' in metrics
    assert 'slipway_queue_depth{model="digits"}' not in metrics  # the unloaded batcher is let go
    client.unload_model("digits")  # unloading an unloaded model changes nothing
    with pytest.raises(InferenceServerException, match="has not been served"):
        client.unload_model("pair")
    client.load_model("digits")
    assert infer_http(client, "digits", x)["model_version"] == "1"


def test_load_refuses_what_it_cannot_honour(explicit_server: ServerHandle) -> None:
    """A config/file override or an unknown parameter is a 400 naming it, never silently ignored."""
    client = http_client(explicit_server)
    with pytest.raises(InferenceServerException, match=r"load parameter\(s\) 'config' not supported") as err:
        client.load_model("digits", config='{"max_batch_size": 8}')
    assert err.value.status() == "400"
    with pytest.raises(InferenceServerException, match=r"'config', 'file:1/model\.onnx' not supported"):
        client.load_model("digits", config="{}", files={"file:1/model.onnx": b"x"})
    r = httpx.post(f"{explicit_server.url}/v2/repository/models/digits/load", json={"parameters": {"x": 1}})
    assert r.status_code == 400 and "unrecognized load parameter(s) ['x']" in r.json()["error"]
    r = httpx.post(f"{explicit_server.url}/v2/repository/models/digits/unload", json={"parameters": {"y": 1}})
    assert r.status_code == 400 and "unrecognized unload parameter 'y'" in r.json()["error"]
    with pytest.raises(InferenceServerException, match=r"no nope/config\.pbtxt in model repository"):
        client.load_model("nope")
    assert client.is_model_ready("digits")


def test_reload_under_concurrent_traffic_fails_nothing(
    repo: Path, explicit_server: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three clients keep sending while version 2 replaces version 1: every request succeeds, 1 then 2."""
    x = images(1, seed=4)
    stop = threading.Event()
    seen: list[list[str]] = [[] for _ in range(3)]
    errors: list[BaseException] = []
    loading: list[float] = []  # start and end of the (slowed) model load
    served_while_loading = threading.Event()

    def slow_load(*args, **kwargs):  # a load that takes a while, like a real model's session creation
        loading.append(time.monotonic())
        time.sleep(0.3)
        model = load_model_dir(*args, **kwargs)
        loading.append(time.monotonic())
        return model

    monkeypatch.setattr(service_module, "load_model_dir", slow_load)

    def send(versions: list[str]) -> None:
        client = http_client(explicit_server)
        deadline = time.monotonic() + 10
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                versions.append(infer_http(client, "digits", x)["model_version"])
            except BaseException as err:
                errors.append(err)
                return
            if len(loading) == 1:
                served_while_loading.set()

    def wait_until(condition, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)

    threads = [threading.Thread(target=send, args=(versions,)) for versions in seen]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: all(len(v) >= 20 for v in seen))
        add_version(repo, "digits", 2)
        http_client(explicit_server).load_model("digits")
        wait_until(lambda: all(v.count("2") >= 20 for v in seen))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
    assert not errors, errors
    assert served_while_loading.is_set()  # the load ran off the event loop
    for versions in seen:
        assert versions[0] == "1" and versions[-1] == "2"
        switch = versions.index("2")
        assert set(versions[:switch]) == {"1"} and set(versions[switch:]) == {"2"}  # never back to 1
    client = http_client(explicit_server)
    stats = client.get_inference_statistics("digits")["model_stats"][0]
    assert stats["version"] == "2" and stats["inference_stats"]["fail"]["count"] == 0
    assert stats["inference_stats"]["success"]["count"] == sum(v.count("2") for v in seen)
    metrics = httpx.get(f"{explicit_server.url}/metrics").text
    total = sum(len(v) for v in seen)
    assert f'slipway_inference_requests_total{{model="digits",protocol="http"}} {total}.0' in metrics
    assert 'slipway_inference_failures_total{model="digits"' not in metrics


def test_failed_reload_keeps_the_old_version_serving(repo: Path, explicit_server: ServerHandle) -> None:
    client = http_client(explicit_server)
    x = images(1, seed=5)
    add_version(repo, "digits", 2, corrupt=True)
    with pytest.raises(InferenceServerException, match="does not match metadata") as err:
        client.load_model("digits")
    assert err.value.status() == "400" and "version 1 keeps serving" in err.value.message()
    assert infer_http(client, "digits", x)["model_version"] == "1"
    assert index_of(client)["digits"]["state"] == "READY"

    shutil.rmtree(repo / "digits" / "2")
    add_version(repo, "digits", 2)
    client.load_model("digits")
    assert infer_http(client, "digits", x)["model_version"] == "2"
    assert client.get_model_metadata("digits")["versions"] == ["2"]

    (repo / "pair" / "1" / "model.onnx").unlink()  # a first load that fails: UNAVAILABLE with the reason
    with pytest.raises(InferenceServerException, match="does not exist"):
        client.load_model("pair")
    pair = index_of(client)["pair"]
    assert pair["state"] == "UNAVAILABLE" and "does not exist" in pair["reason"]
    with pytest.raises(InferenceServerException, match="has not been served"):
        client.unload_model("pair")


def test_grpc_load_unload_and_index(explicit_server: ServerHandle) -> None:
    client = triton_grpc.InferenceServerClient(explicit_server.grpc_url)
    x = images(3, seed=6)
    names = [m.name for m in client.get_model_repository_index().models]
    assert names == ["digits", "direct", "pair"]
    client.load_model("pair")
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert (index["pair"].version, index["pair"].state) == ("1", "READY")
    assert client.is_model_ready("pair")
    tensor = triton_grpc.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    assert client.infer("pair", [tensor]).get_response().model_version == "1"

    client.unload_model("pair")
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert (index["pair"].state, index["pair"].reason) == ("UNAVAILABLE", "unloaded")
    assert not client.is_model_ready("pair")
    with pytest.raises(InferenceServerException) as err:
        client.infer("pair", [tensor])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("pair")
    assert err.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException, match=r"load parameter\(s\) 'config' not supported") as err:
        client.load_model("pair", config="{}")
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    ready = client.get_model_repository_index(as_json=True)["models"]
    assert [m["name"] for m in ready if m.get("state") == "READY"] == ["digits"]


def test_queued_requests_finish_on_the_old_version(repo: Path) -> None:
    """In the core: requests queued on version 1 finish there after the swap, while new ones run on version 2."""
    session_options = SessionOptions(intra_op_threads=1)
    core = InferenceCore(
        load_repository(repo, session_options, ["direct"]),
        OPTIONS,
        repository=repo,
        session_options=session_options,
        model_control_mode="explicit",
    )
    x = {"input": images(1, seed=7)}

    async def scenario() -> None:
        await core.start()
        v1 = core.models["direct"]
        old = core._batcher_of[id(v1)]
        gate = threading.Event()
        run = old._run

        def gated_run(session, batch):  # holds version 1's only worker until the swap is done
            gate.wait(10)
            return run(session, batch)

        old._run = gated_run  # type: ignore[method-assign]
        queued = [asyncio.create_task(core.infer(v1, x)) for _ in range(5)]
        await asyncio.sleep(0.05)
        add_version(repo, "direct", 2)
        load = asyncio.create_task(core.load_model("direct"))
        for _ in range(500):
            if core.models["direct"] is not v1:
                break
            await asyncio.sleep(0.01)
        v2 = core.models["direct"]
        assert v2.version == "2"
        await asyncio.wait_for(core.infer(v2, x), 5)  # the new version serves at once
        assert not any(task.done() for task in queued) and not load.done()  # old queue still draining
        gate.set()
        results = await asyncio.gather(*queued)
        await load
        assert all(r["logits"].shape == (1, 10) for r in results)
        assert old.stats.version == "1" and old.stats.inference_count == 5
        assert core.stats["direct"].version == "2" and core.stats["direct"].inference_count == 1
        await core.stop()

    asyncio.run(scenario())


def test_serve_command_takes_tritons_flags(repo: Path) -> None:
    """`slipway serve --model-control-mode explicit --load-model NAME`, through start_server's subprocess mode."""
    result = CliRunner().invoke(serve, [str(repo), "--load-model", "digits"])
    assert result.exit_code != 0 and "needs --model-control-mode explicit" in result.output
    with start_server(
        repo,
        threads=1,
        options=OPTIONS,
        subprocess_mode=True,
        model_control_mode="explicit",
        load_models=["direct"],
    ) as handle:
        client = http_client(handle)
        assert [e["name"] for e in client.get_model_repository_index() if e.get("state") == "READY"] == [
            "direct"
        ]
        client.load_model("digits")
        assert infer_http(client, "digits", images(1))["model_version"] == "1"

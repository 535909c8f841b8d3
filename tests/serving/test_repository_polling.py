"""Triton's model control mode POLL on `slipway serve`: the server follows its repository.

Real tritonclient (HTTP and gRPC) against a real server on 127.0.0.1 polling every 0.2 s; the main scenario runs
`slipway serve --model-control-mode poll --repository-poll-secs 0.2` in its own process. Every wait polls until
the server shows the change, with a deadline far beyond what a slow machine needs. Folders appear and go with
one rename (as the docs advise), so that no poll sees half a copy.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from serving_helpers import images
from tritonclient.utils import InferenceServerException

from slipway.experiments.spec import parse_spec
from slipway.serving.experiment import write_experiment
from slipway.serving.server import ServerHandle, start_server
from slipway.serving.service import ServerOptions

POLL_S = 0.2
DEADLINE_S = 30.0
OPTIONS = ServerOptions(
    max_queue=64, timeout_s=10.0, max_body_bytes=1 << 20, shutdown_grace_s=1.0, repository_poll_secs=POLL_S
)


@pytest.fixture
def repo(model_repo: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_repo, tmp_path / "repo"))


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {DEADLINE_S:g} s: {what}")


def move_in(staging: Path, target: Path) -> None:
    """Make a prepared folder appear in the repository in one rename."""
    os.replace(staging, target)


def copy_model(repo: Path, source: str, name: str) -> None:
    staging = Path(shutil.copytree(repo / source, repo.parent / f"staging-{name}"))
    config = staging / "config.pbtxt"
    config.write_text(config.read_text().replace(f'name: "{source}"', f'name: "{name}"'))
    move_in(staging, repo / name)


def add_version(repo: Path, model: str, version: int) -> None:
    staging = Path(shutil.copytree(repo / model / "1", repo.parent / f"staging-{model}-{version}"))
    move_in(staging, repo / model / str(version))


def http_client(server: ServerHandle) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(server.url.removeprefix("http://"))


def infer_version(client: triton_http.InferenceServerClient, model: str, x: np.ndarray) -> str:
    tensor = triton_http.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    return str(client.infer(model, [tensor]).get_response()["model_version"])


def entries(client: triton_http.InferenceServerClient, model: str) -> list[dict]:
    return [e for e in client.get_model_repository_index() if e["name"] == model]


def ready(client: triton_http.InferenceServerClient, model: str) -> bool:
    try:
        return bool(client.is_model_ready(model))
    except InferenceServerException:
        return False


class Traffic:
    """One client sending to a model until stopped: the versions that answered, and any error."""

    def __init__(self, server: ServerHandle, model: str) -> None:
        self.versions: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, args=(server, model))

    def _send(self, server: ServerHandle, model: str) -> None:
        client, x = http_client(server), images(1, seed=11)
        while not self._stop.is_set():
            try:
                self.versions.append(infer_version(client, model, x))
            except BaseException as err:
                self.errors.append(err)
                return

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture
def poll_server(repo: Path) -> Iterator[ServerHandle]:
    with start_server(
        repo, threads=1, options=OPTIONS, subprocess_mode=True, model_control_mode="poll"
    ) as handle:
        yield handle


def test_poll_mode_follows_the_repository(repo: Path, poll_server: ServerHandle) -> None:
    """New folder -> loaded; new version -> reloaded under traffic with no failure; bad config -> the old version
    keeps serving and the index shows why; removed folder -> unloaded; fixed config -> reloaded."""
    client = http_client(poll_server)
    x = images(2, seed=12)
    assert {e["name"]: e["state"] for e in client.get_model_repository_index()} == dict.fromkeys(
        ["digits", "direct", "pair"], "READY"
    )
    # Triton refuses the model control API outside explicit mode: UNAVAILABLE (HTTP 503), its message first.
    for call in (client.load_model, client.unload_model):
        with pytest.raises(InferenceServerException) as err:
            call("digits")
        assert err.value.status() == "503"
        assert err.value.message().startswith(
            "explicit model load / unload is not allowed in model control mode 'poll'"
        )
        assert "--repository-poll-secs" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        triton_grpc.InferenceServerClient(poll_server.grpc_url).unload_model("digits")
    assert err.value.status() == "StatusCode.UNAVAILABLE"

    with Traffic(poll_server, "digits") as traffic:
        copy_model(repo, "digits", "added")
        wait_until(lambda: ready(client, "added"), "the new model folder is loaded")
        assert infer_version(client, "added", x) == "1"

        wait_until(lambda: len(traffic.versions) >= 5 or bool(traffic.errors), "traffic flows")
        add_version(repo, "digits", 2)
        wait_until(lambda: "2" in traffic.versions[-3:] or bool(traffic.errors), "version 2 serves")
        served = len(traffic.versions)
        wait_until(lambda: len(traffic.versions) >= served + 5 or bool(traffic.errors), "traffic goes on")
    assert not traffic.errors, traffic.errors  # the reload failed no request
    switch = traffic.versions.index("2")
    assert set(traffic.versions[:switch]) == {"1"} and set(traffic.versions[switch:]) == {"2"}
    assert client.get_model_metadata("digits")["versions"] == ["2"]

    config = repo / "direct" / "config.pbtxt"
    good = config.read_text()
    config.write_text(good + "dynamic_batching { priority_levels: 2 }\n")
    wait_until(lambda: len(entries(client, "direct")) == 2, "the refused reload shows in the index")
    serving, failed = entries(client, "direct")
    assert (serving["version"], serving["state"], serving["reason"]) == ("1", "READY", "")
    assert failed["state"] == "UNAVAILABLE" and "`dynamic_batching.priority_levels`" in failed["reason"]
    assert "version 1 keeps serving" in failed["reason"]
    assert ready(client, "direct") and infer_version(client, "direct", x) == "1"

    os.replace(repo / "pair", repo.parent / "pair-removed")
    wait_until(lambda: not ready(client, "pair"), "the removed model is unloaded")
    assert entries(client, "pair") == [
        {"name": "pair", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}
    ]
    with pytest.raises(InferenceServerException, match="'pair' is not loaded") as err:
        infer_version(client, "pair", x)
    assert err.value.status() == "400"

    config.write_text(good)  # fixed: the next poll reloads it and the failure entry goes
    wait_until(lambda: len(entries(client, "direct")) == 1, "the fixed config is reloaded")
    assert entries(client, "direct")[0]["state"] == "READY" and infer_version(client, "direct", x) == "1"


def test_poll_leaves_a_running_experiment_alone(repo: Path) -> None:
    """A model split by an A/B experiment keeps both versions while its folder changes; other models follow."""
    add_version(repo, "digits", 2)
    spec = parse_spec({"name": "exp", "model": "digits", "a": "1", "b": "2"})
    write_experiment(repo / "digits", spec)
    with start_server(repo, threads=1, options=OPTIONS, model_control_mode="poll") as server:
        client = http_client(server)
        assert client.get_model_metadata("digits")["versions"] == ["1", "2"]
        add_version(repo, "digits", 3)
        copy_model(repo, "direct", "added")  # applied by a poll that also sees digits/3
        wait_until(lambda: ready(client, "added"), "the new model folder is loaded")
        time.sleep(3 * POLL_S)  # a few more polls
        assert client.get_model_metadata("digits")["versions"] == ["1", "2"]
        assert [(e["version"], e["state"]) for e in entries(client, "digits")] == [
            ("1", "READY"),
            ("2", "READY"),
        ]


def test_poll_mode_starts_on_an_empty_repository(tmp_path: Path, model_repo: Path) -> None:
    """Unlike mode none, an empty repository is a valid start in mode poll: models come later."""
    repo = tmp_path / "repo"
    repo.mkdir()
    with start_server(repo, threads=1, options=OPTIONS, model_control_mode="poll") as server:
        client = http_client(server)
        assert client.get_model_repository_index() == []
        shutil.copytree(model_repo / "digits", tmp_path / "staging")
        move_in(tmp_path / "staging", repo / "digits")
        wait_until(lambda: ready(client, "digits"), "the first model is loaded")
        assert infer_version(client, "digits", images(1)) == "1"

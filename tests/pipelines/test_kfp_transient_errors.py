"""`submit --wait` and `runs get --wait` survive transient KFP API errors and stop at once on permanent ones.

The real kfp.Client talks HTTP to the local KFP test double (tests/pipelines/kfp_double.py, not a real
Kubeflow), which serves injected faults (tests/transient_faults.py) to the run polls: HTTP 503, 429, 502, and
connection resets (four in a row: urllib3 itself retries a GET three times). The CLI runs as a real `slipway`
subprocess; $SLIPWAY_RETRY_BACKOFF_S keeps its backoff at 10 ms.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import kfp
import pytest
from kfp_double import KfpDouble, RunningDouble

from slipway.cluster import kfp_client as kubeflow
from slipway.cluster.retry import BACKOFF_ENV
from slipway.core.errors import ClusterError, NotFoundError

SLIPWAY = Path(sys.executable).with_name("slipway")
RUN_GET = r"^/apis/v2beta1/runs/[0-9a-f]{32}$"
TRANSIENT = (503, 429, "reset", "reset", "reset", "reset", 502)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for var in (kubeflow.HOST_ENV, kubeflow.TOKEN_ENV, "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(BACKOFF_ENV, "0.01")


@pytest.fixture
def api() -> Iterator[RunningDouble]:
    with RunningDouble(KfpDouble(run_script=["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"])) as running:
        yield running


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slipway.cli.compile import compile_pipeline, resolve_pipeline

    return compile_pipeline(
        *resolve_pipeline("quickstart", None, []), tmp_path_factory.mktemp("p") / "q.yaml"
    )


def _start(package: Path, url: str) -> kubeflow.RunInfo:
    return kubeflow.submit_package(package, run_name="r", experiment="e", host=url)


def test_wait_for_run_retries_transient_errors(
    api: RunningDouble, package: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = _start(package, api.url)
    api.double.faults.inject("GET", RUN_GET, *TRANSIENT)

    with caplog.at_level(logging.WARNING, logger="slipway.cluster.retry"):
        done = kubeflow.wait_for_run(run.run_id, api.url, poll_s=0.01, timeout_s=60)

    assert done.state == "SUCCEEDED"
    assert [fault for _, _, fault in api.double.faults.served] == list(TRANSIENT)
    retries = [r.getMessage() for r in caplog.records if r.name == "slipway.cluster.retry"]
    assert len(retries) == 4  # 503, 429, the resets once urllib3 gave up, 502
    assert all(f"polling run {run.run_id}" in m for m in retries)


@pytest.mark.parametrize(
    ("status", "error", "text"), [(404, NotFoundError, "not found"), (403, ClusterError, "403")]
)
def test_wait_for_run_stops_at_once_on_a_permanent_error(
    api: RunningDouble, package: Path, status: int, error: type[Exception], text: str
) -> None:
    run = _start(package, api.url)
    api.double.faults.inject("GET", RUN_GET, status, status)

    with pytest.raises(error, match=text):
        kubeflow.wait_for_run(run.run_id, api.url, poll_s=0.01, timeout_s=60)
    assert len(api.double.faults.served) == 1


def _slipway(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLIPWAY_", "KF_PIPELINES_", "KUBECONFIG"))
    }
    env |= {kubeflow.HOST_ENV: url, BACKOFF_ENV: "0.01", "HOME": str(tmp_path)}  # HOME: no kfp context file
    return subprocess.run(
        [str(SLIPWAY), *args], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )


def test_cli_submit_wait_survives_transient_errors_and_fails_fast_on_forbidden(
    api: RunningDouble, tmp_path: Path
) -> None:
    api.double.faults.inject("GET", RUN_GET, *TRANSIENT)
    ok = _slipway(api.url, tmp_path, "submit", "quickstart", "--wait", "--poll-interval", "10ms")

    assert ok.returncode == 0, ok.stderr
    assert "SUCCEEDED" in ok.stdout
    assert "transient error" in ok.stderr  # each retry is reported
    assert api.double.faults.pending() == 0

    api.double.faults.inject("GET", RUN_GET, 403, 403)
    [run_id] = api.double.runs
    forbidden = _slipway(api.url, tmp_path, "runs", "get", run_id, "--wait", "--poll-interval", "10ms")

    assert forbidden.returncode == 1
    errors = [line for line in forbidden.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "HTTP 403" in errors[0]
    assert "Traceback" not in forbidden.stderr
    assert api.double.faults.pending() == 1  # the second 403 was never asked for: no retry

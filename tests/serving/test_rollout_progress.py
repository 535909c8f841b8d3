"""The rollout's waits report progress (readiness, traffic, the canary analysis), and `slipway deploy` prints
it on stderr while stdout keeps one JSON (or YAML) document.

Against `k8s_double.KServeDouble`, a local test double of the API server + KServe (not a real cluster): on
the FakeClock for the callback, and in real time for the `slipway` processes (revisions Ready after 0.05 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from slipway.cluster.kserve import build_inference_service
from slipway.cluster.prometheus import PrometheusClient
from slipway.cluster.rollout import Rollout, RolloutSettings, WaitProgress
from slipway.core import images
from slipway.core.artifacts import ModelArtifact, TensorSpec

try:
    from k8s_double import FakeClock, KServeDouble
except ImportError:  # tests/serving imported as a package
    from tests.serving.k8s_double import FakeClock, KServeDouble  # type: ignore[no-redef]

NS, NAME = "models", "mnist"
V1, V2 = "s3://models/mnist/v1", "s3://models/mnist/v2"
REV1, REV2 = f"{NAME}-predictor-00001", f"{NAME}-predictor-00002"
SLIPWAY = Path(sys.executable).with_name("slipway")

# stochastic: a threaded HTTP double; `make test-flaky` reruns these to show that they do not flake.
pytestmark = [pytest.mark.timeout(120), pytest.mark.stochastic]


def _body(uri: str) -> dict:
    return build_inference_service(
        NAME, NS, uri, "onnx", canary_traffic_percent=10, deployment_mode="Knative"
    )


def _healthy_metrics(double: KServeDouble) -> None:
    for revision, rate in ((REV2, 3.0), (REV1, 27.0)):
        where = f'revision_name="{revision}"'
        double.prom_rules += [
            (("5xx", where), 0.001),
            (("histogram_quantile", where), 100.0),
            (("revision_request_count", where), rate),
        ]


def test_waits_report_each_poll_and_each_canary_check(
    api: k8s.CustomObjectsApi, double: KServeDouble, clock: FakeClock
) -> None:
    events: list[WaitProgress] = []
    settings = RolloutSettings(
        ready_timeout_s=5, poll_interval_s=0.02, analysis_s=90, analysis_interval_s=30, request_timeout_s=5
    )
    rollout = Rollout(
        api,
        settings,
        prometheus=PrometheusClient(double.url, window="1m", timeout_s=5),
        sleep=clock.sleep,
        clock=clock,
        on_progress=events.append,
    )
    assert rollout.deploy(_body(V1)).outcome == "created"
    readiness = [e for e in events if e.what == "first revision Ready"]
    assert len(readiness) >= 2  # Ready after 0.05 s of polls every 0.02 s: reported while it was not
    assert [e.elapsed_s for e in readiness] == sorted(e.elapsed_s for e in readiness)
    assert all(e.limit_s == 5 and (e.namespace, e.name) == (NS, NAME) for e in readiness)
    assert "Ready=Unknown (RevisionMissing: Deploying)" in readiness[0].condition
    first = f"{NS}/{NAME}: waiting for first revision Ready, 0s of at most 5s: "
    assert readiness[0].line().startswith(first)

    events.clear()
    _healthy_metrics(double)
    assert rollout.deploy(_body(V2)).outcome == "promoted"
    waits = [e.what for e in events]
    assert "new revision Ready with traffic" in waits
    analysis = [e for e in events if e.what.startswith("canary analysis")]
    assert analysis[0].what == f"canary analysis of {REV2} against {REV1}"
    assert analysis[0].condition.startswith("3 passing checks needed, one every 30s")
    assert [e.elapsed_s for e in analysis] == pytest.approx([0, 30, 60, 90])
    assert analysis[-1].condition == "check 3 passed; passed 3/3, failed 0/2, without traffic 0"
    assert all(e.limit_s == 120 for e in analysis)  # (3 passes + 2 failures - 1) checks of 30 s


@pytest.fixture
def live_double() -> Iterator[KServeDouble]:
    """The double in real time, for `slipway` processes (which sleep for real)."""
    server = KServeDouble(ready_after_s=0.05).start()
    yield server
    server.stop()


def _kubeconfig(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "double", "cluster": {"server": url}}],
                "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "double", "context": {"cluster": "double", "user": "tester"}}],
                "current-context": "double",
            }
        )
    )
    return path


def _slipway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SLIPWAY), *args], capture_output=True, text=True, timeout=90)


def test_deploy_prints_progress_on_stderr_and_one_document_on_stdout(
    live_double: KServeDouble, tmp_path: Path
) -> None:
    kubeconfig = str(_kubeconfig(tmp_path, live_double.url))
    common = ["-n", NS, "--kubeconfig", kubeconfig, "--poll-interval", "20ms"]
    done = _slipway("deploy", NAME, *common, "--storage-uri", V1, "--format", "onnx", "--timeout", "30s")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcome"] == "created"
    assert f"{NS}/{NAME}: waiting for first revision Ready, " in done.stderr
    assert "Ready=Unknown (RevisionMissing: Deploying)" in done.stderr

    _healthy_metrics(live_double)
    canary = ["--storage-uri", V2, "--format", "onnx", "--prometheus-url", live_double.url]
    analysis = ["--analysis-window", "0.2s", "--analysis-interval", "100ms", "-o", "yaml"]
    done = _slipway("deploy", NAME, *common, *canary, *analysis)
    assert done.returncode == 0, done.stderr
    result = yaml.safe_load(done.stdout)
    assert result["outcome"] == "promoted" and result["analysis"]["passed"] == 2
    assert f"waiting for canary analysis of {REV2} against {REV1}" in done.stderr
    assert "check 2 passed; passed 2/2, failed 0/2" in done.stderr

    done = _slipway("rollout", "status", NAME, *common, "-o", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["latest_rolledout_revision"] == REV2
    assert done.stderr == ""  # nothing waited


def test_a_held_canary_exits_5_with_its_document(live_double: KServeDouble, tmp_path: Path) -> None:
    kubeconfig = str(_kubeconfig(tmp_path, live_double.url))
    common = ["-n", NS, "--kubeconfig", kubeconfig, "--poll-interval", "20ms"]
    assert _slipway("deploy", NAME, *common, "--storage-uri", V1, "--format", "onnx").returncode == 0
    # no canary traffic in Prometheus: no check can judge it, and `hold` leaves it for a person
    args = ["--storage-uri", V2, "--format", "onnx", "--prometheus-url", live_double.url]
    args += ["--analysis-window", "0.2s", "--analysis-interval", "0.1s"]
    done = _slipway("deploy", NAME, *common, *args)
    assert done.returncode == 5, done.stderr
    assert json.loads(done.stdout)["outcome"] == "held"


def test_deploy_sends_an_aoti_package_to_the_triton_with_torch_runtime(
    live_double: KServeDouble, tmp_path: Path
) -> None:
    kubeconfig = str(_kubeconfig(tmp_path, live_double.url))
    common = ["-n", NS, "--kubeconfig", kubeconfig, "--poll-interval", "20ms"]
    meta = tmp_path / "model.pt2.meta.json"

    def package(torch_version: str) -> list[str]:
        spec = [TensorSpec(name="input", dtype="float32", shape=[-1, 1, 8, 8])]
        artifact = ModelArtifact(
            file="model.pt2", sha256="0" * 64, size_bytes=10, framework="aoti", precision="fp32", inputs=spec,
            outputs=[TensorSpec(name="logits", dtype="float32", shape=[-1, 10])], torch_version=torch_version,
        )  # fmt: skip
        meta.write_text(artifact.model_dump_json())
        return ["--storage-uri", V1, "--format", "aoti", "--artifact-metadata", str(meta)]

    done = _slipway("deploy", NAME, *common, *package(f"{images.AOTI_TORCH_VERSION}+cpu"))
    assert done.returncode == 0, done.stderr
    model = live_double.stored(NS, NAME)["spec"]["predictor"]["model"]
    assert model["runtime"] == "slipway-triton-torch" and model["modelFormat"] == {"name": "aoti"}
    # compiled by another torch release: refused before anything is applied, naming both releases
    done = _slipway("deploy", "other", *common, *package("2.12.0+cpu"))
    assert done.returncode == 2 and "compiled with torch 2.12.0" in done.stderr
    assert f"runs torch {images.AOTI_TORCH_VERSION}" in done.stderr and not live_double.exists(NS, "other")

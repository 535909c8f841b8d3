"""slipway.cluster.kfp_client and its CLI, with the real kfp.Client (2.17) against a local test double of the KFP REST API.

Tested against a local test double of the KFP REST API v2beta1 (tests/pipelines/kfp_double.py), not a real
Kubeflow: it checks what kfp.Client sends and how Slipway reads the answers, not how a cluster runs the pipeline.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import kfp
import pytest
import yaml
from click.testing import CliRunner
from kfp_double import KfpDouble, RunningDouble

from slipway.cli import submission
from slipway.cli.kubeflow import runs, schedule, submit
from slipway.cli.main import SlipwayGroup
from slipway.cluster import kfp_client as kubeflow
from slipway.cluster.kfp_client import RunFailedError
from slipway.core.errors import ClusterError, ConfigError, NotFoundError
from slipway.serving.server import free_port

SENTINELS = {
    "MLFLOW_TRACKING_URI": "http://sentinel-uri.invalid",
    "MLFLOW_TRACKING_USERNAME": "sentinel-user-4711",
    "MLFLOW_TRACKING_PASSWORD": "sentinel-password-4711",
    "AWS_ACCESS_KEY_ID": "sentinel-akid-4711",
    "AWS_SECRET_ACCESS_KEY": "sentinel-secret-4711",
    "MLFLOW_S3_ENDPOINT_URL": "http://sentinel-s3.invalid",
}
TOKEN = "sentinel-token-8f3c"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No user kfp context file, no host/token from the caller's shell, secret values planted in the env."""
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for var in (kubeflow.HOST_ENV, kubeflow.TOKEN_ENV, "KF_PIPELINES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    for key, value in SENTINELS.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def api() -> Iterator[RunningDouble]:
    with RunningDouble(KfpDouble()) as running:
        yield running


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The quickstart pipeline compiled once per epoch count (a compile takes about a second)."""
    from slipway.cli.compile import compile_pipeline, resolve_pipeline

    folder = tmp_path_factory.mktemp("packages")
    return {
        epochs: compile_pipeline(
            *resolve_pipeline("quickstart", None, [f"train.epochs={epochs}"]), folder / f"e{epochs}.yaml"
        )
        for epochs in (3, 4)
    }


def _submit(package: Path, url: str, **kwargs: Any) -> kubeflow.RunInfo:
    return kubeflow.submit_package(package, run_name="r", experiment="slipway-quickstart", host=url, **kwargs)


def _cli() -> click.Group:
    """The commands as the lead registers them: under a SlipwayGroup that maps errors to exit codes."""

    @click.group(cls=SlipwayGroup)
    def cli() -> None:
        pass

    for command in (submit, runs, schedule):
        cli.add_command(command)
    return cli


def _uploaded(api: RunningDouble) -> list[dict[str, Any]]:
    """The multipart fields of every upload_version call (the package's YAML text included)."""
    return [r.body for r in api.double.requests if r.path == "/apis/v2beta1/pipelines/upload_version"]


def test_submit_uploads_a_pipeline_version_and_runs_it_with_no_secret_values(
    api: RunningDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    info = submission.submit(
        "quickstart", api.url, overrides=["train.epochs=3", "cluster.gpu.count=2"], token=TOKEN, run_name="t1"
    )

    assert info.run_id in api.double.runs
    assert info.state == "PENDING"
    assert info.url is None  # the double, like ml-pipeline:8888, serves no UI: no link is made up
    [pipeline] = api.double.pipelines.values()
    assert pipeline["display_name"] == "slipway-quickstart"  # the compiled pipelineInfo.name
    [version] = api.double.versions.values()
    [upload] = _uploaded(api)
    digest = hashlib.sha256(upload["uploadfile"].encode()).hexdigest()
    assert version["display_name"] == f"sha256-{digest[:12]}"
    assert version["description"] == f"sha256:{digest}"
    assert (info.pipeline_id, info.pipeline_version_id) == (
        pipeline["pipeline_id"],
        version["pipeline_version_id"],
    )
    [experiment] = api.double.experiments.values()
    assert experiment["display_name"] == "slipway-quickstart"  # the preset's registry.experiment
    [body] = api.double.bodies("POST", "/runs")
    assert body["display_name"] == "t1"
    assert body["experiment_id"] == experiment["experiment_id"]
    assert body["pipeline_version_reference"] == {
        "pipeline_id": pipeline["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert "pipeline_spec" not in body  # the run is made from the version, not inline
    assert len(body["runtime_config"]["parameters"]["run_key"]) == 32

    spec, platform = yaml.safe_load_all(upload["uploadfile"])
    assert spec == version["pipeline_spec"]
    config = spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert config["train"]["epochs"] == 3
    assert "cluster" not in config  # compile-time settings stay out of the runtime parameter
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    secret_names = {s["secretName"] for e in executors.values() for s in e["secretAsEnv"]}
    assert secret_names == {"slipway-mlflow", "slipway-object-store"}
    gpu_counts = {
        name: e["container"]["resources"]["accelerator"]["resourceCount"]
        for name, e in spec["deploymentSpec"]["executors"].items()
        if "accelerator" in e["container"].get("resources", {})
    }
    assert gpu_counts["exec-train-teacher"] == "2" and len(gpu_counts) >= 2  # teacher, student, prune
    assert set(gpu_counts.values()) == {"2"}

    everything_sent = json.dumps([r.body for r in api.double.requests]) + json.dumps(
        [{k: v for k, v in r.headers.items() if k != "authorization"} for r in api.double.requests]
    )
    for value in SENTINELS.values():
        assert value not in everything_sent
    api_calls = [r for r in api.double.requests if r.path.startswith("/apis/")]  # not the UI check of /
    assert {r.headers.get("authorization") for r in api_calls} == {f"Bearer {TOKEN}"}
    assert TOKEN not in caplog.text
    assert info.run_id in caplog.text  # the submission is logged, without the token


def test_the_same_package_reuses_its_version_and_new_content_adds_one(
    api: RunningDouble, packages: dict[int, Path]
) -> None:
    first = _submit(packages[3], api.url)
    again = _submit(packages[3], api.url)
    other = _submit(packages[4], api.url)

    assert len(api.double.pipelines) == 1
    assert len(api.double.versions) == 2 and len(_uploaded(api)) == 2
    assert first.pipeline_version_id == again.pipeline_version_id != other.pipeline_version_id
    assert first.run_id != again.run_id

    named = _submit(packages[3], api.url, version_name="v1-epochs3")
    assert api.double.versions[str(named.pipeline_version_id)]["display_name"] == "v1-epochs3"
    assert (
        _submit(packages[3], api.url, version_name="v1-epochs3").pipeline_version_id
        == named.pipeline_version_id
    )
    with pytest.raises(ConfigError, match=r"--version-name 'v1-epochs3'.*other content"):
        _submit(packages[4], api.url, version_name="v1-epochs3")


def test_no_cache_is_baked_into_the_uploaded_version(api: RunningDouble, packages: dict[int, Path]) -> None:
    cached = _submit(packages[3], api.url)
    fresh = _submit(packages[3], api.url, enable_caching=False)

    assert cached.pipeline_version_id and fresh.pipeline_version_id
    assert cached.pipeline_version_id != fresh.pipeline_version_id
    specs = {v["pipeline_version_id"]: v["pipeline_spec"] for v in api.double.versions.values()}

    def cache_flags(spec: dict[str, Any]) -> set[bool]:
        return {
            bool(t.get("cachingOptions", {}).get("enableCache"))
            for t in spec["root"]["dag"]["tasks"].values()
        }

    assert cache_flags(specs[cached.pipeline_version_id]) == {True, False}  # per kind, as compiled
    assert cache_flags(specs[fresh.pipeline_version_id]) == {False}


def test_inline_runs_carry_the_spec_and_upload_nothing(api: RunningDouble, packages: dict[int, Path]) -> None:
    info = _submit(packages[3], api.url, inline=True, enable_caching=False)

    assert not api.double.pipelines and not api.double.versions
    [body] = api.double.bodies("POST", "/runs")
    assert "pipeline_version_reference" not in body
    tasks = body["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"].values()
    assert not any(t.get("cachingOptions", {}).get("enableCache") for t in tasks)
    assert info.pipeline_version_id is None


def test_a_run_of_a_missing_version_is_refused_by_the_double(api: RunningDouble) -> None:
    """The double checks references as KFP does, so the tests above prove runs point at real versions."""
    import kfp_server_api

    conn = kubeflow.connect(api.url)
    with pytest.raises(kfp_server_api.ApiException) as err, contextlib.redirect_stdout(io.StringIO()):
        conn.client.run_pipeline(experiment_id="e", job_name="x", pipeline_id="p", version_id="v")
    assert err.value.status == 404


def test_submit_and_wait_for_a_run_that_succeeds(api: RunningDouble, packages: dict[int, Path]) -> None:
    api.double.run_script = ["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"]
    seen: list[str] = []

    info = _submit(
        packages[3], api.url, wait=True, poll_s=0.01, on_progress=lambda i, _s: seen.append(i.state)
    )

    assert info.state == "SUCCEEDED"
    assert info.finished_at is not None
    assert seen == ["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"]


def test_wait_for_a_run_that_fails_names_the_step_and_the_url(
    api: RunningDouble, packages: dict[int, Path]
) -> None:
    api.double.run_script = ["RUNNING", "FAILED"]
    info = _submit(packages[3], api.url)

    with pytest.raises(RunFailedError) as err:
        kubeflow.wait_for_run(info.run_id, api.url, poll_s=0.01)

    message = str(err.value)
    assert f"run {info.run_id} FAILED" in message
    assert "train-teacher: OOMKilled" in message
    assert f"slipway runs get {info.run_id}" in message  # no UI address known: how to look it up instead


def test_wait_times_out_with_the_run_still_going(api: RunningDouble, packages: dict[int, Path]) -> None:
    api.double.run_script = ["RUNNING"]
    info = _submit(packages[3], api.url)

    with pytest.raises(ClusterError, match=r"still RUNNING after 0.05 s"):
        kubeflow.wait_for_run(info.run_id, api.url, timeout_s=0.05, poll_s=0.01)


def test_list_and_get_runs(api: RunningDouble, packages: dict[int, Path]) -> None:
    first = kubeflow.submit_package(
        packages[3], run_name="first", experiment="slipway-quickstart", host=api.url
    )
    second = kubeflow.submit_package(packages[3], run_name="second", experiment="other", host=api.url)

    listed = kubeflow.list_runs(api.url)
    assert [r.run_id for r in listed] == [second.run_id, first.run_id]  # newest first
    only_other = kubeflow.list_runs(api.url, experiment="other")
    assert [r.name for r in only_other] == ["second"]
    got = kubeflow.get_run(first.run_id, api.url)
    assert (got.run_id, got.name, got.state) == (first.run_id, "first", "RUNNING")
    with pytest.raises(NotFoundError, match="no-such-run"):
        kubeflow.get_run("no-such-run", api.url)
    with pytest.raises(NotFoundError, match="experiment 'missing'"):
        kubeflow.list_runs(api.url, experiment="missing")


def test_schedule_creates_a_recurring_run_with_kfp_cron(api: RunningDouble) -> None:
    info = submission.schedule("quickstart", "0 3 * * 1", api.url, overrides=["train.epochs=2"])

    [body] = api.double.bodies("POST", "/recurringruns")
    assert info.recurring_run_id in api.double.recurring_runs
    assert info.cron == "0 0 3 * * 1"
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert body["mode"] == "ENABLE"
    assert body["no_catchup"] is True
    assert int(body["max_concurrency"]) == 1
    assert body["display_name"] == "quickstart-quickstart-scheduled"
    [version] = api.double.versions.values()
    assert (
        info.pipeline_version is not None
        and info.pipeline_version.version_id == version["pipeline_version_id"]
    )
    assert body["pipeline_version_reference"]["pipeline_version_id"] == version["pipeline_version_id"]
    assert "pipeline_spec" not in body
    spec = version["pipeline_spec"]
    assert spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]["train"]["epochs"] == 2
    with pytest.raises(ConfigError, match="expected 5 fields"):
        submission.schedule("quickstart", "every day", api.url)


def test_a_host_that_is_down_fails_fast_and_clearly() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ClusterError, match=r"cannot reach Kubeflow Pipelines at http://127\.0\.0\.1"):
        submission.submit("quickstart", url)
    with pytest.raises(ConfigError, match="http"):
        kubeflow.connect("127.0.0.1:8888")


def test_refused_credentials_say_what_to_do_without_echoing_the_token() -> None:
    with RunningDouble(KfpDouble(required_token="the-right-one")) as running:
        with pytest.raises(ClusterError) as err:
            kubeflow.connect(running.url, token="wrong-token-value")
        assert "HTTP 401" in str(err.value) and "--token" in str(err.value)
        assert "wrong-token-value" not in str(err.value)
        assert kubeflow.connect(running.url, token="the-right-one").host == running.url


def test_cli_submit_wait_list_get_schedule(api: RunningDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kubeflow.TOKEN_ENV, TOKEN)
    monkeypatch.setenv(kubeflow.HOST_ENV, api.url)
    cli = _cli()
    runner = CliRunner()

    ok = runner.invoke(
        cli, ["submit", "quickstart", "--set", "train.epochs=2", "--wait", "--poll-interval", "0.01"]
    )
    assert ok.exit_code == 0, ok.output
    assert "SUCCEEDED" in ok.output and TOKEN not in ok.output
    [run_id] = api.double.runs

    listed = runner.invoke(cli, ["runs", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [run_id]
    got = runner.invoke(cli, ["runs", "get", run_id, "--json"])
    assert json.loads(got.stdout)["state"] == "SUCCEEDED"

    api.double.run_script = ["FAILED"]
    failed = runner.invoke(cli, ["submit", "quickstart", "--wait", "--poll-interval", "0.01"])
    assert failed.exit_code == 1
    assert "FAILED" in failed.output and "train-teacher" in failed.output

    scheduled = runner.invoke(cli, ["schedule", "quickstart", "--cron", "*/30 * * * *"])
    assert scheduled.exit_code == 0, scheduled.output
    assert "0 */30 * * * *" in scheduled.output
    assert "pipeline slipway-quickstart version sha256-" in scheduled.output
    api_calls = [r for r in api.double.requests if r.path.startswith("/apis/")]  # not the UI check of /
    assert api_calls and all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in api_calls)
    assert "no KFP UI address known" in ok.output  # the double serves only the API: said, not faked


def test_cli_host_down_exits_with_a_message() -> None:
    result = CliRunner().invoke(_cli(), ["runs", "list", "--host", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1
    assert "cannot reach Kubeflow Pipelines" in result.output


def test_retrain_submits_the_training_package_on_the_new_data(api: RunningDouble, tmp_path: Any) -> None:
    """The drift pipeline's retrain step, cluster target: the compiled training pipeline goes to KFP with its
    own config (plus retrain_overrides), a fresh run key, and the retraining dataset's URI as data_source;
    the dataset holds the training rows, the labelled window rows, the original test split and the held-out
    recent split."""
    import numpy as np
    from kfp import dsl

    from slipway.cli.compile import compile_pipeline, resolve_pipeline
    from slipway.components.drift import retrain
    from slipway.core.config import load_config
    from slipway.core.data import load_dataset

    training = load_config("quickstart", ["train.epochs=7"])
    package = compile_pipeline(*resolve_pipeline("quickstart", training, []), tmp_path / "retrain.yaml")
    original = load_dataset(training.data, training.seed)
    window = tmp_path / "window"
    labels = np.where(np.arange(200) % 4 == 0, -1, original.y_test[:200])  # a quarter without feedback
    with window.open("wb") as fh:
        np.savez(fh, x=original.x_test[:200], y=labels)
    drift = load_config(
        "drift",
        [
            "monitor.retrain=true",
            f"monitor.retrain_package={package}",
            f"monitor.kfp_host={api.url}",
            "monitor.min_labels=100",
            "monitor.retrain_overrides=[distill.epochs=3]",
        ],
    )
    dataset = dsl.Dataset(name="dataset", uri=str(tmp_path / "dataset"), metadata={})
    outcome = dsl.Artifact(name="outcome", uri=str(tmp_path / "outcome"), metadata={})
    status = retrain.python_func(
        config=drift.model_dump(mode="json", exclude_none=True),
        window=dsl.Dataset(name="window", uri=str(window), metadata={}),
        dataset=dataset,
        outcome=outcome,
    )

    assert status == "submitted" and outcome.metadata["run"] in api.double.runs
    assert outcome.metadata["labelled_rows"] == 150
    [body] = api.double.bodies("POST", "/runs")
    parameters = body["runtime_config"]["parameters"]
    assert parameters["data_source"] == dataset.uri and len(parameters["run_key"]) == 32
    assert parameters["teacher_epochs"] == 7 and parameters["student_epochs"] == 3
    assert parameters["config"]["train"]["epochs"] == 7 and parameters["config"]["distill"]["epochs"] == 3
    with np.load(dataset.path) as data:
        kept, recent = outcome.metadata["train_rows_added"], outcome.metadata["recent_rows"]
        assert (kept, recent) == (105, 45)  # monitor.recent_test_fraction 0.3 of 150
        assert len(data["y"]) == len(original.y_train) + len(original.y_val) + kept
        np.testing.assert_array_equal(data["x_test"], original.x_test)
        assert data["x_recent"].shape == (recent, 1, 8, 8) and (data["y_recent"] >= 0).all()


# --- where the API and the UI are: --host, $SLIPWAY_KFP_HOST, kfp's $KF_PIPELINES_ENDPOINT, the kube context ---


def _use_kubeconfig(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """$KUBECONFIG as a new process would see it (the kubernetes client reads it once, at import)."""
    from kubernetes.config import kube_config

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))


def _kubeconfig(path: Path, server: str, token: str) -> Path:
    """A kubeconfig whose cluster is `server` (the double standing in for the Kubernetes API server proxy)."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "ctx",
            }
        )
    )
    return path


def test_host_order_is_flag_then_slipway_env_then_kfp_env(
    api: RunningDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", api.url)
    assert kubeflow.connect().host == api.url  # kfp's own variable, read by kfp.Client
    monkeypatch.setenv(kubeflow.HOST_ENV, dead)
    with pytest.raises(ClusterError, match="cannot reach"):
        kubeflow.connect()  # ours wins over kfp's
    assert kubeflow.connect(api.url).host == api.url  # the flag wins over both
    monkeypatch.setenv(kubeflow.HOST_ENV, api.url)
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", dead)
    assert kubeflow.connect().host == api.url


def test_without_a_host_kfp_finds_the_api_through_the_kube_context(
    api: RunningDouble, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """kfp.Client's discovery: the current context's server + the service proxy path, with the context's own
    credentials; the CLI needs no --host."""
    _use_kubeconfig(monkeypatch, _kubeconfig(tmp_path / "kubeconfig", api.url, "kube-token-77"))

    result = CliRunner().invoke(_cli(), ["runs", "list", "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    proxied = [r for r in api.double.requests if r.kube_proxy_namespace == "kubeflow"]
    assert {r.path for r in proxied} >= {"/apis/v2beta1/healthz", "/apis/v2beta1/runs"}
    assert {r.headers.get("authorization") for r in proxied} == {"Bearer kube-token-77"}


def test_without_any_host_or_context_the_error_says_where_to_look(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use_kubeconfig(monkeypatch, tmp_path / "missing")
    with pytest.raises(ClusterError, match=r"no Kubeflow Pipelines API found.*KF_PIPELINES_ENDPOINT"):
        kubeflow.connect()
    with pytest.raises(ConfigError, match="needs a host"):
        kubeflow.connect(token="a-token")


def test_run_links_use_kfp_ui_address_logic(
    packages: dict[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with RunningDouble(KfpDouble(ui=True)) as ui_and_api:  # like a port-forward of ml-pipeline-ui
        info = _submit(packages[3], ui_and_api.url)
        assert info.url == f"{ui_and_api.url}/#/runs/details/{info.run_id}"
    with RunningDouble(KfpDouble()) as api_only:  # like a port-forward of ml-pipeline:8888
        assert _submit(packages[3], api_only.url).url is None
        monkeypatch.setenv("KF_PIPELINES_UI_ENDPOINT", "https://kubeflow.example.com/pipeline")
        info = _submit(packages[3], api_only.url)
        assert info.url == f"https://kubeflow.example.com/pipeline/#/runs/details/{info.run_id}"

"""slipway.cluster.kfp_client and its CLI, with the real kfp.Client (2.17) against a local test double of the KFP REST API.

Tested against a local test double of the KFP REST API v2beta1 (tests/pipelines/kfp_double.py), not a real
Kubeflow: it checks what kfp.Client sends and how Slipway reads the answers, not how a cluster runs the pipeline.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import click
import kfp
import pytest
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


def _cli() -> click.Group:
    """The commands as the lead registers them: under a SlipwayGroup that maps errors to exit codes."""

    @click.group(cls=SlipwayGroup)
    def cli() -> None:
        pass

    for command in (submit, runs, schedule):
        cli.add_command(command)
    return cli


def test_submit_sends_compiled_spec_with_config_and_no_secret_values(
    api: RunningDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    info = submission.submit(
        "quickstart", api.url, overrides=["train.epochs=3", "cluster.gpu.count=2"], token=TOKEN, run_name="t1"
    )

    assert info.run_id in api.double.runs
    assert info.url == f"{api.url}/#/runs/details/{info.run_id}"
    assert info.state == "PENDING"
    [experiment] = api.double.experiments.values()
    assert experiment["display_name"] == "slipway-quickstart"  # the preset's registry.experiment
    [body] = api.double.bodies("POST", "/runs")
    assert body["display_name"] == "t1"
    assert body["experiment_id"] == experiment["experiment_id"]
    spec = body["pipeline_spec"]["pipeline_spec"]
    config = spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert config["train"]["epochs"] == 3
    assert "cluster" not in config  # compile-time settings stay out of the runtime parameter
    executors = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"][
        "executors"
    ]
    secret_names = {s["secretName"] for e in executors.values() for s in e["secretAsEnv"]}
    assert secret_names == {"slipway-mlflow", "slipway-object-store"}
    gpu_counts = {
        name: e["container"]["resources"]["accelerator"]["resourceCount"]
        for name, e in spec["deploymentSpec"]["executors"].items()
        if "accelerator" in e["container"].get("resources", {})
    }
    assert gpu_counts["exec-train-teacher"] == gpu_counts["exec-distill-student"] == "2"
    assert set(gpu_counts.values()) == {"2"}

    everything_sent = json.dumps([r.body for r in api.double.requests]) + json.dumps(
        [{k: v for k, v in r.headers.items() if k != "authorization"} for r in api.double.requests]
    )
    for value in SENTINELS.values():
        assert value not in everything_sent
    assert {r.headers.get("authorization") for r in api.double.requests} == {f"Bearer {TOKEN}"}
    assert TOKEN not in caplog.text
    assert info.run_id in caplog.text  # the submission is logged, without the token


def test_submit_and_wait_for_a_run_that_succeeds(api: RunningDouble) -> None:
    api.double.run_script = ["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"]
    seen: list[str] = []

    info = submission.submit(
        "quickstart", api.url, wait=True, poll_s=0.01, on_progress=lambda i, _s: seen.append(i.state)
    )

    assert info.state == "SUCCEEDED"
    assert info.finished_at is not None
    assert seen == ["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"]


def test_wait_for_a_run_that_fails_names_the_step_and_the_url(api: RunningDouble) -> None:
    api.double.run_script = ["RUNNING", "FAILED"]
    info = submission.submit("quickstart", api.url)

    with pytest.raises(RunFailedError) as err:
        kubeflow.wait_for_run(info.run_id, api.url, poll_s=0.01)

    message = str(err.value)
    assert f"run {info.run_id} FAILED" in message
    assert "train-teacher: OOMKilled" in message
    assert info.url in message


def test_wait_times_out_with_the_run_still_going(api: RunningDouble) -> None:
    api.double.run_script = ["RUNNING"]
    info = submission.submit("quickstart", api.url)

    with pytest.raises(ClusterError, match=r"still RUNNING after 0.05 s"):
        kubeflow.wait_for_run(info.run_id, api.url, timeout_s=0.05, poll_s=0.01)


def test_list_and_get_runs(api: RunningDouble) -> None:
    first = submission.submit("quickstart", api.url, run_name="first")
    second = submission.submit("quickstart", api.url, run_name="second", experiment="other")

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
    spec = body["pipeline_spec"]["pipeline_spec"]
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
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in api.double.requests)


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

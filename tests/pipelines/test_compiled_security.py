"""Compiled pipeline YAML: no secret values, secrets only as secretKeyRef platform config, GPUs only on GPU steps,
caching and retries as slipway.core.cluster_config designs them. Every pipeline in slipway.pipelines.PIPELINES is compiled
with the real kfp compiler; nothing here needs a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from slipway.cli.compile import compile_pipeline, runtime_config
from slipway.core.cluster_config import STEP_KIND_LABEL, ClusterConfig
from slipway.core.config import load_config
from slipway.core.errors import ConfigError
from slipway.core.images import CPU_IMAGE
from slipway.pipelines import PIPELINES
from slipway.pipelines.platform import configure_task

SENTINELS = {
    "MLFLOW_TRACKING_URI": "http://sentinel-tracking.invalid:5000",
    "MLFLOW_TRACKING_USERNAME": "sentinel-user-31337",
    "MLFLOW_TRACKING_PASSWORD": "sentinel-password-31337",
    "AWS_ACCESS_KEY_ID": "sentinel-akid-31337",
    "AWS_SECRET_ACCESS_KEY": "sentinel-aws-secret-31337",
    "MLFLOW_S3_ENDPOINT_URL": "http://sentinel-minio.invalid:9000",
}
CLUSTER_OVERRIDES = [
    "cluster.mlflow_secret.name=team-mlflow",
    "cluster.mlflow_secret.env={MLFLOW_TRACKING_URI: uri, MLFLOW_TRACKING_USERNAME: user, MLFLOW_TRACKING_PASSWORD: pw}",
    "cluster.storage_secret.name=team-minio",
    "cluster.gpu.count=2",
    "cluster.gpu.node_selector={cloud.google.com/gke-accelerator: nvidia-l4}",
    "cluster.gpu.tolerations=[{key: gpu-pool, operator: Equal, value: 'true', effect: NoSchedule}]",
    "cluster.service_account=pipeline-runner",
]
SECRET_ENV_NAMES = set(SENTINELS)


@pytest.fixture(scope="module")
def planted_env() -> Iterator[None]:
    """Secret values in this process's environment: the compiler must never pick them up."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in SENTINELS.items():
            mp.setenv(key, value)
        yield


@pytest.fixture(scope="module", params=sorted(PIPELINES))
def compiled(request: pytest.FixtureRequest, planted_env: None, tmp_path_factory: Any) -> tuple[str, str]:
    entry = PIPELINES[request.param]
    cfg = load_config(entry.preset, CLUSTER_OVERRIDES)
    path = compile_pipeline(entry, cfg, tmp_path_factory.mktemp("compiled") / f"{entry.name}.yaml")
    return entry.name, path.read_text()


def _docs(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    pipeline_spec, platform_spec = yaml.safe_load_all(text)
    return pipeline_spec, platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _tasks(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(task name, task spec, executor label) for every container task, inside condition sub-DAGs too."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for dag in dags:
        for name, task in dag["tasks"].items():
            component = spec["components"][task["componentRef"]["name"]]
            if "executorLabel" in component:
                yield name, task, component["executorLabel"]


def test_no_secret_value_anywhere(compiled: tuple[str, str]) -> None:
    _, text = compiled
    for value in SENTINELS.values():
        assert value not in text
    assert "sentinel" not in text


def test_secrets_only_as_secret_key_refs(compiled: tuple[str, str]) -> None:
    _, text = compiled
    spec, platform = _docs(text)
    # The pipeline spec proper (containers, parameters) names no credential variable at all.
    spec_text = yaml.safe_dump(spec)
    for env in SECRET_ENV_NAMES:
        assert env not in spec_text
    for executor in spec["deploymentSpec"]["executors"].values():
        assert "env" not in executor["container"]
    expected = {
        "team-mlflow": {
            "uri": "MLFLOW_TRACKING_URI",
            "user": "MLFLOW_TRACKING_USERNAME",
            "pw": "MLFLOW_TRACKING_PASSWORD",
        },
        "team-minio": {
            k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")
        },
    }
    assert set(platform) == set(spec["deploymentSpec"]["executors"])  # every step is configured
    for executor in platform.values():
        refs = {
            ref["secretName"]: {kv["secretKey"]: kv["envVar"] for kv in ref["keyToEnv"]}
            for ref in executor["secretAsEnv"]
        }
        assert refs == expected
        for ref in executor["secretAsEnv"]:
            assert ref["secretNameParameter"] == {"runtimeValue": {"constant": ref["secretName"]}}


def test_gpus_only_on_gpu_steps(compiled: tuple[str, str]) -> None:
    name, text = compiled
    spec, platform = _docs(text)
    executors = spec["deploymentSpec"]["executors"]
    kinds = {label: platform[label]["podMetadata"]["labels"][STEP_KIND_LABEL] for label in executors}
    assert set(kinds.values()) <= {"cpu", "gpu", "side_effects"}
    for label, executor in executors.items():
        resources = executor["container"].get("resources", {})
        if kinds[label] == "gpu":
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert resources["accelerator"]["resourceCount"] == "2"
            assert platform[label]["nodeSelector"]["labels"] == {
                "cloud.google.com/gke-accelerator": "nvidia-l4"
            }
            assert platform[label]["tolerations"] == [
                {"key": "gpu-pool", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
            ]
            assert executor["container"]["image"] != CPU_IMAGE
        else:
            assert "accelerator" not in resources
            assert "nodeSelector" not in platform[label] and "tolerations" not in platform[label]
            assert executor["container"]["image"] == CPU_IMAGE
    if name == "quickstart":
        task_kinds = {task: kinds[label] for task, _, label in _tasks(spec)}
        assert {"train-teacher", "search-student"} <= {t for t, k in task_kinds.items() if k == "gpu"}
        assert {"gate", "register", "promote", "package-triton"} <= {
            t for t, k in task_kinds.items() if k == "side_effects"
        }


def test_caching_and_retries_per_kind(compiled: tuple[str, str]) -> None:
    _, text = compiled
    spec, platform = _docs(text)
    seen = set()
    for task_name, task, label in _tasks(spec):
        kind = platform[label]["podMetadata"]["labels"][STEP_KIND_LABEL]
        seen.add(kind)
        cached = task.get("cachingOptions", {}).get("enableCache", False)
        retries = task.get("retryPolicy", {}).get("maxRetryCount", 0)
        if kind == "side_effects":
            assert (cached, retries) == (False, 0), task_name
        elif kind == "gpu":
            assert (cached, retries) == (True, 2), task_name
            assert task["retryPolicy"]["backoffDuration"] == "60s"
        else:
            assert (cached, retries) == (True, 1), task_name
    assert "cpu" in seen and seen <= {"cpu", "gpu", "side_effects"}


def test_resources_follow_the_step_kind(compiled: tuple[str, str]) -> None:
    _, text = compiled
    spec, platform = _docs(text)
    defaults = ClusterConfig().steps
    for label, executor in spec["deploymentSpec"]["executors"].items():
        settings = getattr(defaults, platform[label]["podMetadata"]["labels"][STEP_KIND_LABEL])
        resources = executor["container"]["resources"]
        assert resources["resourceCpuLimit"] == settings.cpu_limit
        assert resources["resourceCpuRequest"] == settings.cpu_request
        assert resources["resourceMemoryLimit"] == settings.memory_limit
        assert resources["resourceMemoryRequest"] == settings.memory_request


def test_config_parameter_carries_the_config_but_not_the_cluster_section(compiled: tuple[str, str]) -> None:
    name, text = compiled
    spec, _ = _docs(text)
    default = spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert default == runtime_config(load_config(PIPELINES[name].preset, CLUSTER_OVERRIDES))
    assert "cluster" not in default


def test_no_cluster_settings_without_compile(tmp_path: Path) -> None:
    """Import-time pipelines (what kfp.local runs) carry none of them: configure_task(..., None) is a no-op."""
    from kfp import compiler

    entry = PIPELINES["quickstart"]
    path = tmp_path / "plain.yaml"
    compiler.Compiler().compile(entry.load(), str(path))
    text = path.read_text()
    assert "platforms" not in text and "retryPolicy" not in text and "accelerator" not in text
    assert configure_task(object(), "gpu", None) is not None  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="step kind"):
        configure_task(object(), "tpu", ClusterConfig())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cluster.steps.side_effects.caching=true", "must not be cached"),
        ("cluster.steps.side_effects.retries=1", "must not be retried"),
        ("cluster.steps.gpu.memory_request=64Gi", "exceeds memory_limit"),
        ("cluster.steps.cpu.cpu_limit=two", "cluster.steps.cpu.cpu_limit"),
        ("cluster.mlflow_secret.name=Bad_Name", "cluster.mlflow_secret.name"),
        ("cluster.storage_secret.env={MLFLOW_TRACKING_URI: uri}", "come from two secrets"),
        ("cluster.gpu.tolerations=[{operator: Exists, value: x}]", "takes no value"),
    ],
)
def test_wrong_cluster_settings_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("quickstart", [override])


def test_credentials_in_the_tracking_uri_are_refused(tmp_path: Path) -> None:
    cfg = load_config("quickstart", ["registry.tracking_uri=https://bob:hunter2@mlflow.example.com"])
    with pytest.raises(ConfigError, match="carries a password") as err:
        compile_pipeline(PIPELINES["quickstart"], cfg, tmp_path / "p.yaml")
    assert "hunter2" not in str(err.value)
    assert not (tmp_path / "p.yaml").exists()

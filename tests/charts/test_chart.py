"""The Helm chart, linted and rendered with the real helm binary for the defaults and every ci/ scenario."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import (
    CHART_DIR,
    CI_VALUES,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    Objects,
    find_binary,
    helm_template,
    objects_of_kind,
    one_object,
    run_tool,
)
from kube_objects import pod_specs, validate_object

import slipway
from slipway.core import images

scenarios = pytest.mark.parametrize("values_file", SCENARIOS.values(), ids=SCENARIOS.keys())
Render = Callable[..., Objects]

MONITOR_URL = f"http://{RELEASE}-monitor.{NAMESPACE}.svc.cluster.local:8081/events"
# Env names that carry credentials: they must come from a Secret (valueFrom), never a literal value.
SECRET_ENV = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|ACCESS_KEY|BACKEND_STORE_URI|DATABASE_URL", re.I)
# user:password@ inside a URL anywhere in the rendered output.
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@\"']+:[^/\s@\"']+@", re.I)


def test_ci_scenarios_cover_the_required_cases() -> None:
    required = {"gpu-tensorrt", "canary", "mlflow-internal", "mlflow-external", "minimal"}
    assert required <= CI_VALUES.keys(), f"missing ci/*-values.yaml: {sorted(required - CI_VALUES.keys())}"


@scenarios
def test_helm_lint_strict(values_file: Path | None) -> None:
    args = [find_binary("helm"), "lint", "--strict", str(CHART_DIR), "--namespace", NAMESPACE]
    if values_file is not None:
        args += ["--values", str(values_file)]
    result = run_tool(args)
    assert result.returncode == 0, f"helm lint --strict failed:\n{result.stdout}\n{result.stderr}"


@scenarios
def test_every_rendered_object_is_valid(render_chart: Render, values_file: Path | None) -> None:
    objects = render_chart(values_file)
    assert objects, "helm template rendered nothing"
    problems = [problem for obj in objects for problem in validate_object(obj)]
    assert not problems, "invalid objects:\n" + "\n".join(problems)
    assert all(obj["metadata"].get("namespace") == NAMESPACE for obj in objects), (
        "an object misses its namespace"
    )


@pytest.mark.parametrize(
    "assignment", ["unknownKey=1", "monitor.unknownKey=1", "serving.resources.limits.gpus=1"]
)
def test_schema_rejects_unknown_values_keys(assignment: str) -> None:
    result = helm_template(assignment)
    assert result.returncode != 0, f"helm template accepted the unknown key {assignment}"
    assert "additional properties" in result.stderr, f"unexpected error for {assignment}:\n{result.stderr}"


@pytest.mark.parametrize(
    "assignment",
    [
        "model.format=pytorch",
        "image.tag=latest",
        "serving.canaryTrafficPercent=150",
        "podSecurityContext.runAsNonRoot=false",
    ],
)
def test_schema_rejects_invalid_values(assignment: str) -> None:
    result = helm_template(assignment)
    assert result.returncode != 0, f"helm template accepted {assignment}"


def _schema_objects(node: Any, path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for key, child in node.items():
            yield from _schema_objects(child, f"{path}.{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _schema_objects(child, f"{path}[{index}]")


def test_values_schema_closes_every_object() -> None:
    """Every object forbids unknown keys; free-form maps (labels, nodeSelector) only take strings."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    objects = list(_schema_objects(schema))
    assert len(objects) > 20, "the schema describes too few objects"
    open_objects = [
        path
        for path, node in objects
        if node.get("additionalProperties") is not False
        and node.get("additionalProperties") != {"type": "string"}
    ]
    assert not open_objects, f"objects that accept unknown keys: {open_objects}"
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert set(values) == set(schema["properties"]), (
        "values.yaml and values.schema.json disagree on top-level keys"
    )


@scenarios
def test_every_pod_runs_locked_down(render_chart: Render, values_file: Path | None) -> None:
    problems = []
    for obj in render_chart(values_file):
        for where, pod, containers in pod_specs(obj):
            pod_context = pod.get("securityContext") or {}
            if pod_context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: pod seccompProfile is not RuntimeDefault")
            for container in containers:
                context = container.get("securityContext") or {}
                name = f"{where} container {container.get('name', 'model')}"
                if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
                    problems.append(f"{name}: runAsNonRoot is not true")
                if (context.get("runAsUser", pod_context.get("runAsUser")) or 0) == 0:
                    problems.append(f"{name}: runs as uid 0 or an unset uid")
                if context.get("readOnlyRootFilesystem") is not True:
                    problems.append(f"{name}: root filesystem is writable")
                if context.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{name}: allowPrivilegeEscalation is not false")
                if "ALL" not in (context.get("capabilities") or {}).get("drop", []):
                    problems.append(f"{name}: does not drop ALL capabilities")
                if not container.get("resources", {}).get("limits"):
                    problems.append(f"{name}: has no resource limits")
    assert not problems, "\n".join(problems)


@scenarios
def test_no_secret_values_in_rendered_output(render_chart: Render, values_file: Path | None) -> None:
    objects = render_chart(values_file)
    assert not objects_of_kind(objects, "Secret"), "the chart must reference Secrets, never create them"
    text = yaml.safe_dump_all(objects)
    assert not URL_WITH_PASSWORD.search(text), "a URL with an inline password is rendered"
    literal_secrets = [
        f"{where}: {env['name']}"
        for obj in objects
        for where, _, containers in pod_specs(obj)
        for container in containers
        for env in container.get("env", [])
        if SECRET_ENV.search(env["name"]) and "value" in env and not env["value"].startswith("sqlite:")
    ]
    assert not literal_secrets, f"credentials passed as literal env values: {literal_secrets}"


def test_external_mlflow_reads_credentials_from_named_secrets(render_chart: Render) -> None:
    values = yaml.safe_load(CI_VALUES["mlflow-external"].read_text())["mlflow"]["external"]
    container = one_object(render_chart(CI_VALUES["mlflow-external"]), "Deployment", f"{RELEASE}-mlflow")
    container = container["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": values["database"]["existingSecret"],
        "key": values["database"]["uriKey"],
    }
    assert container["envFrom"] == [{"secretRef": {"name": values["artifacts"]["credentialsSecret"]}}]
    objects = render_chart(CI_VALUES["mlflow-external"])
    assert not [
        o for o in objects if o["kind"] == "PersistentVolumeClaim" and "mlflow" in o["metadata"]["name"]
    ], "an external MLflow must not get a PVC"


def test_external_mlflow_without_a_secret_name_fails() -> None:
    result = helm_template("mlflow.enabled=true", "mlflow.external.enabled=true")
    assert result.returncode != 0 and "existingSecret" in result.stderr, result.stderr


def test_internal_mlflow_has_deployment_service_and_pvc(render_chart: Render) -> None:
    objects = render_chart(CI_VALUES["mlflow-internal"])
    name = f"{RELEASE}-mlflow"
    deployment = one_object(objects, "Deployment", name)
    one_object(objects, "Service", name)
    pvc = one_object(objects, "PersistentVolumeClaim", f"{name}-data")
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}} in volumes


def test_helm_test_pod_runs_the_smoke_test(render_chart: Render) -> None:
    tests = [
        o
        for o in objects_of_kind(render_chart(), "Pod")
        if o["metadata"]["annotations"].get("helm.sh/hook") == "test"
    ]
    assert len(tests) == 1, "expected one Pod with the helm.sh/hook: test annotation"
    command = tests[0]["spec"]["containers"][0]["command"]
    assert command == [
        "slipway",
        "smoke",
        "--url",
        f"http://{RELEASE}.{NAMESPACE}.svc.cluster.local",
        "--model",
        "model",
        "--protocol",
        "http",
    ]


def test_smoke_test_url_follows_the_deployment_mode(render_chart: Render) -> None:
    pod = one_object(render_chart(CI_VALUES["mlflow-internal"]), "Pod")  # RawDeployment
    assert (
        f"http://{RELEASE}-predictor.{NAMESPACE}.svc.cluster.local" in pod["spec"]["containers"][0]["command"]
    )


def test_inference_service_is_wired_to_triton_and_the_monitor(render_chart: Render) -> None:
    isvc = one_object(render_chart(), "InferenceService", RELEASE)
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["modelFormat"] == {"name": "onnx"}
    assert predictor["model"]["runtime"] == "slipway-triton"
    assert predictor["logger"] == {"mode": "all", "url": MONITOR_URL}
    assert "canaryTrafficPercent" not in predictor, "no canary unless asked for"
    assert "nvidia.com/gpu" not in predictor["model"]["resources"]["limits"]


def test_gpu_scenario_requests_a_gpu_for_a_tensorrt_plan(render_chart: Render) -> None:
    predictor = one_object(render_chart(CI_VALUES["gpu-tensorrt"]), "InferenceService")["spec"]["predictor"]
    assert predictor["model"]["modelFormat"]["name"] == "tensorrt"
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert predictor["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_canary_scenario_splits_traffic(render_chart: Render) -> None:
    isvc = one_object(render_chart(CI_VALUES["canary"]), "InferenceService")
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"


def test_minimal_scenario_renders_only_the_model(render_chart: Render) -> None:
    objects = render_chart(CI_VALUES["minimal"])
    assert sorted(o["kind"] for o in objects) == ["InferenceService", "ServiceAccount"]
    assert "logger" not in objects_of_kind(objects, "InferenceService")[0]["spec"]["predictor"]


def test_monitor_deployment_serves_drift_on_healthz_and_metrics(render_chart: Render) -> None:
    objects = render_chart()
    deployment = one_object(objects, "Deployment", f"{RELEASE}-monitor")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == [
        "slipway", "monitor", "serve", "--host", "0.0.0.0", "--port", "8081",
        "--data-dir", "/data", "--reference", "/reference/reference.npz",
    ]  # fmt: skip
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == f"{RELEASE}-monitor-data"
    assert volumes[mounts["/reference"]]["configMap"]["name"] == f"{RELEASE}-reference"
    one_object(objects, "PersistentVolumeClaim", f"{RELEASE}-monitor-data")
    service = one_object(objects, "Service", f"{RELEASE}-monitor")
    assert service["spec"]["ports"][0]["port"] == 8081
    endpoint = one_object(objects, "ServiceMonitor")["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")


def test_monitor_reference_can_come_from_a_pvc(render_chart: Render) -> None:
    deployment = one_object(render_chart(CI_VALUES["gpu-tensorrt"]), "Deployment", f"{RELEASE}-monitor")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["reference"]["persistentVolumeClaim"] == {
        "claimName": "mnist1d-reference",
        "readOnly": True,
    }


def test_alerts_cover_drift_monitor_down_and_latency(render_chart: Render) -> None:
    rule = one_object(render_chart(), "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert (
        "slipway_drift_detected" in alerts["SlipwayDriftDetected"]
    )  # the monitor's verdict (promtool tests it)
    assert f'service="{RELEASE}-monitor"' in alerts["SlipwayMonitorDown"]
    assert (
        'nv_inference_request_summary_us{namespace="models", inferenceservice="demo"'
        in alerts["SlipwayLatencyP99High"]
    )
    assert 'quantile="0.99"' in alerts["SlipwayLatencyP99High"]
    assert "> 250" in alerts["SlipwayLatencyP99High"]
    # Triton's series, judged per Knative revision: a bad canary pages on its own (promtool tests it).
    assert alerts["SlipwayLatencyP99High"].startswith("max by (revision) (")
    assert "sum by (revision) (rate(nv_inference_request_failure{" in alerts["SlipwayInferenceErrors"]


def test_grafana_dashboard_shows_canary_vs_stable_queue_batch_gpu_and_drift(render_chart: Render) -> None:
    config_map = one_object(render_chart(), "ConfigMap", f"{RELEASE}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config_map["data"].values()
    assert "@@" not in text, "a dashboard placeholder was not substituted"
    dashboard = json.loads(text)
    assert len(dashboard["uid"]) <= 40, "Grafana uids are at most 40 characters"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"]), "panel ids must be unique"
    exprs = {panel["title"]: " ".join(t["expr"] for t in panel["targets"]) for panel in panels}
    assert "sum by (revision) (rate(" in exprs["Traffic share by revision"], "no canary vs stable panel"
    assert "nv_inference_request_summary_us" in exprs["p99 latency by revision"]
    assert "rate(nv_inference_queue_duration_us" in exprs["Queue and compute time per request"]
    assert "nv_inference_exec_count" in exprs["Batch size by revision"]
    assert "nv_gpu_utilization" in exprs["GPU utilisation"]
    assert any("rate(nv_inference_count" in e for e in exprs.values()), "no throughput panel"
    assert any("slipway_drift_share_of_drifted_columns" in e for e in exprs.values()), "no drift panel"
    # Every Triton query selects this release's model (GPU series have no model label); promtool evaluates
    # each one on synthetic series in test_alert_rules.py.
    for title, expr in exprs.items():
        for name, selector in re.findall(r"(\w*)\{([^}]*)\}", expr):
            if name.startswith("nv_") or "nv_inference" in selector:
                assert 'namespace="models", inferenceservice="demo"' in selector, (title, selector)
                assert name.startswith("nv_gpu_") or 'model="model"' in selector, (title, selector)


def test_rbac_is_least_privilege(render_chart: Render) -> None:
    objects = render_chart()
    role = one_object(objects, "Role")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], f"wildcard in {rule}"
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, f"write access in {rule}"
        assert rule.get("resourceNames") == [RELEASE], f"rule not limited to this release: {rule}"
        assert "secrets" not in rule["resources"]
    binding = one_object(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert one_object(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    token_mounting = [
        o["metadata"]["name"]
        for o in objects
        for _, pod, _ in pod_specs(o)
        if o["kind"] in {"Deployment", "Pod"} and pod.get("automountServiceAccountToken") is not False
    ]
    assert token_mounting == [f"{RELEASE}-smoke-test"], f"pods that mount an API token: {token_mounting}"


def test_network_policies_restrict_monitor_and_mlflow(render_chart: Render) -> None:
    objects = render_chart(CI_VALUES["mlflow-internal"])
    policies = {p["metadata"]["name"]: p["spec"] for p in objects_of_kind(objects, "NetworkPolicy")}
    assert set(policies) == {f"{RELEASE}-monitor", f"{RELEASE}-mlflow"}
    for name, spec in policies.items():
        assert spec["policyTypes"] == ["Ingress", "Egress"], name
        egress_ports = {port["port"] for rule in spec["egress"] for port in rule["ports"]}
        assert egress_ports == {53}, f"{name} may reach more than DNS: {egress_ports}"
    pipeline_ns = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow-user-example-com"}}
    }
    for (
        name
    ) in policies:  # the pipeline namespace reaches MLflow and the monitor (drift windows), nothing else
        assert pipeline_ns in policies[name]["ingress"][0]["from"], name


def test_chart_defaults_use_the_cpu_image_of_this_version() -> None:
    """slipway.core.images is the one place that names images; the chart's defaults must follow it."""
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert f"{values['image']['repository']}:{values['image']['tag']}" == images.CPU_IMAGE
    assert chart["appVersion"] == slipway.__version__

"""Kustomize base and overlays, rendered with the real `kubectl kustomize` (every entry point, as KFP's
manifests/kustomize/hack/test.sh does)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from chart_helpers import KUSTOMIZE_TARGETS, Objects, one_object
from kube_objects import pod_specs, validate_object

from slipway.core import images

targets = pytest.mark.parametrize("target", KUSTOMIZE_TARGETS.values(), ids=KUSTOMIZE_TARGETS.keys())
Build = Callable[[Path], Objects]
GPU_OVERLAYS = ("gpu", "prod")


def test_every_overlay_is_tested() -> None:
    assert {"dev", "gpu", "prod"} <= KUSTOMIZE_TARGETS.keys(), f"overlays found: {sorted(KUSTOMIZE_TARGETS)}"


@targets
def test_every_object_is_valid(kustomize_build: Build, target: Path) -> None:
    objects = kustomize_build(target)
    problems = [problem for obj in objects for problem in validate_object(obj)]
    assert not problems, "invalid objects:\n" + "\n".join(problems)
    namespaced = [o for o in objects if o["kind"] not in {"Namespace", "ClusterServingRuntime"}]
    assert all(o["metadata"].get("namespace") == "slipway" for o in namespaced), (
        "object outside namespace slipway"
    )


# ClusterServingRuntime -> (its image, the model formats it serves)
RUNTIMES = {
    "slipway-triton": (images.TRITON_IMAGE, {"onnx", "tensorrt"}),
    "slipway-triton-torch": (images.TRITON_TORCH_IMAGE, {"aoti"}),
}
runtimes = pytest.mark.parametrize("runtime_name", RUNTIMES)


@targets
@runtimes
def test_triton_runtime_matches_the_image_contract(
    kustomize_build: Build, target: Path, runtime_name: str
) -> None:
    runtime = one_object(kustomize_build(target), "ClusterServingRuntime", runtime_name)
    image, formats = RUNTIMES[runtime_name]
    (container,) = runtime["spec"]["containers"]
    assert container["image"] == image, f"runtime image differs from slipway.core.images ({image})"
    assert container["args"][0] == "tritonserver", "the container lost its command (a patch replaced it?)"
    assert "--metrics-config=summary_latencies=true" in container["args"], (
        "the chart's p99 alert needs summaries"
    )
    assert {f["name"] for f in runtime["spec"]["supportedModelFormats"]} == formats
    assert runtime["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/v2/health/ready", (
        "ready must mean every model loaded, not just a listening port"
    )
    assert probe["port"] == container["ports"][0]["containerPort"], "Knative accepts only the serving port"


@targets
def test_the_torch_runtime_writes_only_to_its_tmp_and_shm_volumes(
    kustomize_build: Build, target: Path
) -> None:
    spec = one_object(kustomize_build(target), "ClusterServingRuntime", "slipway-triton-torch")["spec"]
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v["emptyDir"] for v in spec["volumes"]}
    assert mounts == {"/tmp": "tmp", "/dev/shm": "shm"}
    assert volumes["shm"]["medium"] == "Memory" and all(v.get("sizeLimit") for v in volumes.values())


@targets
@runtimes
def test_triton_runs_locked_down(kustomize_build: Build, target: Path, runtime_name: str) -> None:
    runtime = one_object(kustomize_build(target), "ClusterServingRuntime", runtime_name)
    for where, _, containers in pod_specs(runtime):
        for container in containers:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True and context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == [
                "ALL"
            ], where
            assert container["resources"]["limits"], f"{where}: no resource limits"


@targets
def test_pipeline_runner_has_least_privilege(kustomize_build: Build, target: Path) -> None:
    objects = kustomize_build(target)
    one_object(objects, "ServiceAccount", "pipeline-runner")
    role = one_object(objects, "Role", "pipeline-runner")
    granted = {(group, resource): set(rule["verbs"]) for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]}  # fmt: skip
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], f"wildcard in {rule}"
    assert {"create", "patch", "delete", "watch"} <= granted[("serving.kserve.io", "inferenceservices")]
    assert {"create", "delete"} <= granted[("trainer.kubeflow.org", "trainjobs")]
    assert {"create", "delete"} <= granted[("kubeflow.org", "pytorchjobs")]
    assert granted[("", "pods")] == granted[("", "pods/log")] == {"get", "list", "watch"}
    assert not [key for key in granted if key[1] in {"secrets", "roles", "rolebindings"}], (
        "grants beyond its job"
    )
    binding = one_object(objects, "RoleBinding", "pipeline-runner")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "slipway"}
    ]


@targets
def test_triton_metrics_are_scraped_with_the_labels_the_chart_alerts_on(
    kustomize_build: Build, target: Path
) -> None:
    monitor = one_object(kustomize_build(target), "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["targetPort"] == 8002
    targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert "inferenceservice" in targets
    # canary vs stable in the chart's dashboard and alerts, and `slipway deploy --metric-source triton`
    assert targets["revision"] == ["__meta_kubernetes_pod_label_serving_knative_dev_revision"]


@pytest.mark.parametrize("overlay", GPU_OVERLAYS)
@runtimes
def test_gpu_overlays_put_triton_on_gpu_nodes(
    kustomize_build: Build, overlay: str, runtime_name: str
) -> None:
    objects = kustomize_build(KUSTOMIZE_TARGETS[overlay])
    spec = one_object(objects, "ClusterServingRuntime", runtime_name)["spec"]
    resources = spec["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


@runtimes
def test_dev_overlay_stays_on_cpu(kustomize_build: Build, runtime_name: str) -> None:
    objects = kustomize_build(KUSTOMIZE_TARGETS["dev"])
    spec = one_object(objects, "ClusterServingRuntime", runtime_name)["spec"]
    assert "nvidia.com/gpu" not in spec["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in spec


@runtimes
def test_prod_overlay_limits_disruption_and_raises_limits(kustomize_build: Build, runtime_name: str) -> None:
    objects = kustomize_build(KUSTOMIZE_TARGETS["prod"])
    pdb = one_object(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    gpu_limits = one_object(kustomize_build(KUSTOMIZE_TARGETS["gpu"]), "ClusterServingRuntime", runtime_name)
    prod_limits = one_object(objects, "ClusterServingRuntime", runtime_name)
    gpu_memory = gpu_limits["spec"]["containers"][0]["resources"]["limits"]["memory"]
    prod_memory = prod_limits["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert int(prod_memory.removesuffix("Gi")) > int(gpu_memory.removesuffix("Gi"))

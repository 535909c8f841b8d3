"""The chart's optional checkpoint PVC, the claim `cluster.checkpoints.pvc` names: rendered and linted with the
real helm binary (no cluster), validated against the Kubernetes OpenAPI schema."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from slipway.core.cluster_config import CheckpointsConfig

CHART = Path(__file__).resolve().parents[2] / "charts" / "slipway"
RELEASE, NAMESPACE = "demo", "kubeflow-user"


def _helm(command: str, *set_values: str) -> subprocess.CompletedProcess[str]:
    helm = shutil.which("helm")
    if helm is None:
        pytest.fail("`helm` is not on PATH: run `make tools` and put .tools/bin on PATH", pytrace=False)
    args = [
        helm,
        command,
        *([RELEASE] if command == "template" else []),
        str(CHART),
        "--namespace",
        NAMESPACE,
    ]
    for assignment in set_values:
        args += ["--set", assignment]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def _claims(*set_values: str) -> list[dict[str, Any]]:
    result = _helm("template", *set_values)
    assert result.returncode == 0, result.stderr
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    return [
        o
        for o in objects
        if o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"].endswith("-checkpoints")
    ]


def test_no_checkpoint_claim_by_default() -> None:
    assert _claims() == []


def test_enabled_renders_a_valid_read_write_many_claim() -> None:
    (claim,) = _claims(
        "checkpoints.enabled=true", "checkpoints.size=50Gi", "checkpoints.storageClassName=nfs"
    )
    kubernetes_validate.validate(claim, "1.35.0", strict=True)
    assert claim["metadata"] == {
        "name": f"{RELEASE}-checkpoints",
        "namespace": NAMESPACE,
        "labels": claim["metadata"]["labels"],
    }
    assert claim["metadata"]["labels"]["app.kubernetes.io/component"] == "checkpoints"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "storageClassName": "nfs",
        "resources": {"requests": {"storage": "50Gi"}},
    }
    CheckpointsConfig(pvc=claim["metadata"]["name"])  # a name the config accepts


def test_lint_strict_with_the_claim() -> None:
    result = _helm("lint", "checkpoints.enabled=true", "checkpoints.accessModes={ReadWriteOnce}")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "assignment",
    ["checkpoints.claimName=x", "checkpoints.accessModes={ReadWriteAll}", "checkpoints.size=lots"],
)
def test_schema_rejects_bad_checkpoint_values(assignment: str) -> None:
    result = _helm("template", "checkpoints.enabled=true", assignment)
    assert result.returncode != 0 and "checkpoints" in result.stderr, result.stderr

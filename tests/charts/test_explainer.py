"""The cluster explainer: KServe's `spec.explainer` as a custom container running `slipway serve`, rendered by the
chart (real helm) and by the builder `slipway deploy` uses, both validated with KServe's own models.

KServe's contract for a custom explainer (pkg/apis/serving/v1beta1/explainer_custom.go and the explainer
reconciler): the first container is renamed kserve-container, its STORAGE_URI env var is downloaded into
/mnt/models by the storage initializer, and `--model_name <isvc> --predictor_host <host> --http_port 8080` are
appended to its args. The tests check all three against the real `slipway serve` command line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from chart_helpers import (
    CHART_DIR,
    CI_VALUES,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    Objects,
    helm_template,
    one_object,
)
from kube_objects import validate_object

from slipway.cli.serve import serve
from slipway.cluster.kserve import (
    CONTAINER_SECURITY_CONTEXT,
    EXPLAINER_PORT,
    POD_SECURITY_CONTEXT,
    ExplainerSettings,
    build_inference_service,
    explainer_command,
    validate_inference_service,
)
from slipway.core import images
from slipway.core.errors import ConfigError

Render = Callable[..., Objects]
VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
ENABLED = "explainer.enabled=true"


def _explainer(objects: Objects) -> dict[str, Any] | None:
    return one_object(objects, "InferenceService", RELEASE)["spec"].get("explainer")


@pytest.mark.parametrize("values_file", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_explainer_only_where_enabled(render_chart: Render, values_file: Path | None) -> None:
    values = yaml.safe_load(values_file.read_text()) if values_file else {}
    enabled = bool((values.get("explainer") or {}).get("enabled", VALUES["explainer"]["enabled"]))
    assert VALUES["explainer"]["enabled"] is False, "the explainer must be off by default"
    assert (_explainer(render_chart(values_file)) is not None) == enabled


def test_enabled_explainer_runs_slipway_serve_over_the_model_repository(render_chart: Render) -> None:
    objects = render_chart(None, ENABLED)
    isvc = one_object(objects, "InferenceService", RELEASE)
    validate_inference_service(isvc)  # KServe's generated models: unknown or mistyped fields fail here
    assert validate_object(isvc) == []
    explainer = isvc["spec"]["explainer"]
    (container,) = explainer["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == images.CPU_IMAGE, "the explainer runs the pinned Slipway CPU image"
    assert container["command"] == explainer_command()
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["STORAGE_URI"] == VALUES["model"]["storageUri"], "the storage initializer fills /mnt/models"
    assert container["ports"] == [{"containerPort": EXPLAINER_PORT, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": EXPLAINER_PORT}
    assert container["resources"] == VALUES["explainer"]["resources"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_explainer_runs_non_root_like_every_other_pod(render_chart: Render) -> None:
    objects = render_chart(None, ENABLED)
    explainer = _explainer(objects)
    assert explainer is not None
    monitor = one_object(objects, "Deployment", f"{RELEASE}-monitor")["spec"]["template"]["spec"]
    assert explainer["securityContext"] == monitor["securityContext"] == VALUES["podSecurityContext"]
    container = explainer["containers"][0]
    assert container["securityContext"] == monitor["containers"][0]["securityContext"]
    assert container["securityContext"] == VALUES["containerSecurityContext"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_explainer_needs_an_onnx_model() -> None:
    result = helm_template(ENABLED, "model.format=tensorrt")
    assert result.returncode != 0 and "explainer" in result.stderr and "onnx" in result.stderr, result.stderr


def test_schema_rejects_unknown_explainer_keys() -> None:
    result = helm_template("explainer.enable=true")
    assert result.returncode != 0 and "additional properties" in result.stderr, result.stderr


def test_slipway_serve_takes_the_arguments_kserve_appends(tmp_path: Path) -> None:
    """The container's command plus KServe's appended args parse as one `slipway serve` command line."""
    command = explainer_command()
    assert command[:3] == ["slipway", "serve", "/mnt/models"]
    appended = ["--model_name", RELEASE, "--predictor_host", f"{RELEASE}-predictor.{NAMESPACE}"]
    args = [str(tmp_path), *command[3:], *appended, "--http_port", str(EXPLAINER_PORT)]
    ctx = serve.make_context("serve", args)
    assert ctx.params["http_port"] == EXPLAINER_PORT
    assert ctx.params["host"] == "0.0.0.0" and ctx.params["require_digest"] is True
    assert ctx.params["allow_metrics"] is False
    with pytest.raises(click.UsageError):
        serve.make_context("serve", [str(tmp_path), "--model-name-typo", "x"])


def test_builder_renders_the_chart_explainer(render_chart: Render) -> None:
    """`slipway deploy --explainer` and the chart render the same container (one source of truth: the test)."""
    body = build_inference_service(
        RELEASE, NAMESPACE, VALUES["model"]["storageUri"], "onnx", explainer=ExplainerSettings()
    )
    built = body["spec"]["explainer"]
    charted = _explainer(render_chart(None, ENABLED))
    assert charted is not None
    assert built["securityContext"] == POD_SECURITY_CONTEXT == charted["securityContext"]
    (b,), (c,) = built["containers"], charted["containers"]
    assert b["securityContext"] == CONTAINER_SECURITY_CONTEXT == c["securityContext"]
    for key in ("name", "image", "command", "env", "ports", "readinessProbe", "volumeMounts"):
        assert b[key] == c[key], key
    assert built["volumes"] == charted["volumes"]
    assert "explainer" not in build_inference_service(RELEASE, NAMESPACE, "s3://m/r", "onnx")["spec"]


def test_builder_refuses_an_explainer_for_tensorrt() -> None:
    with pytest.raises(ConfigError, match="explainer"):
        build_inference_service(
            RELEASE, NAMESPACE, "s3://m/r", "tensorrt", explainer=ExplainerSettings(), artifact=None
        )


def test_canary_scenario_runs_with_the_explainer(render_chart: Render) -> None:
    """ci/canary-values.yaml enables it, so the chart-wide checks (validity, lock-down) cover the explainer."""
    assert _explainer(render_chart(CI_VALUES["canary"])) is not None

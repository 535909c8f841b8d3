"""InferenceService builders, checked against KServe's own generated models (kserve 0.21 installed here).

No cluster is involved: these tests build dicts and validate them through `kserve.models`.
"""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from slipway.cluster.kserve import (
    DEPLOYMENT_MODE_ANNOTATION,
    TAG_ROUTING_ANNOTATION,
    InferenceServiceSettings,
    ResourceSettings,
    build_inference_service,
    deployment_mode_of,
    validate_inference_service,
)
from slipway.core import images
from slipway.core.artifacts import ModelArtifact, TensorSpec
from slipway.core.errors import ConfigError


def _artifact(framework: str = "tensorrt", trt: str | None = images.TENSORRT_VERSION) -> ModelArtifact:
    return ModelArtifact(
        file="model.plan",
        sha256="0" * 64,
        size_bytes=10,
        framework=framework,  # type: ignore[arg-type]
        precision="fp16",
        inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, 4])],
        outputs=[TensorSpec(name="logits", dtype="float32", shape=[-1, 3])],
        tensorrt_version=trt,
    )


def _body(**overrides: object) -> dict:
    kwargs: dict = {
        "canary_traffic_percent": 10,
        "logger_url": "http://drift-monitor.models.svc.cluster.local/events",
        "service_account": "slipway-serving",
        "resources": ResourceSettings(cpu="2", memory="4Gi", gpu=1),
        "min_replicas": 1,
        "max_replicas": 3,
    }
    kwargs.update(overrides)
    return build_inference_service("mnist", "models", "s3://models/mnist/v2", "onnx", **kwargs)


def test_build_renders_triton_predictor_and_validates_as_kserve_model() -> None:
    body = _body()
    predictor = body["spec"]["predictor"]
    assert predictor["model"] == {
        "modelFormat": {"name": "onnx"},
        "runtime": "slipway-triton",
        "protocolVersion": "v2",
        "storageUri": "s3://models/mnist/v2",
        "resources": {
            "requests": {"cpu": "2", "memory": "4Gi"},
            "limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
        },
    }
    assert predictor["canaryTrafficPercent"] == 10
    assert predictor["logger"] == {
        "mode": "all",
        "url": "http://drift-monitor.models.svc.cluster.local/events",
    }
    assert predictor["serviceAccountName"] == "slipway-serving"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 3)
    annotations = body["metadata"]["annotations"]
    assert annotations[DEPLOYMENT_MODE_ANNOTATION] == "Knative"
    assert annotations[TAG_ROUTING_ANNOTATION] == "true"

    model = validate_inference_service(body)
    assert type(model).__name__ == "V1beta1InferenceService"
    assert model.spec.predictor.model.storage_uri == "s3://models/mnist/v2"
    assert model.spec.predictor.canary_traffic_percent == 10
    assert model.spec.predictor.logger.mode == "all"
    assert type(model.spec.predictor.model.resources).__name__ == "V1ResourceRequirements"


def test_kserve_runtime_choice_and_no_canary() -> None:
    body = _body(runtime="kserve-tritonserver", canary_traffic_percent=None)
    assert body["spec"]["predictor"]["model"]["runtime"] == "kserve-tritonserver"
    assert "canaryTrafficPercent" not in body["spec"]["predictor"]


def test_unknown_field_is_refused_with_its_path_and_a_hint() -> None:
    body = _body()
    body["spec"]["predictor"]["model"]["storageURI"] = body["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(
        ConfigError, match=r"spec\.predictor\.model: unknown field 'storageURI'.*'storageUri'"
    ):
        validate_inference_service(body)


def test_missing_required_field_is_refused_by_kserve_model() -> None:
    body = _body()
    del body["spec"]["predictor"]["model"]["modelFormat"]
    with pytest.raises(ConfigError, match="model_format"):
        validate_inference_service(body)
    no_predictor = copy.deepcopy(body)
    no_predictor["spec"] = {}
    with pytest.raises(ConfigError, match="predictor"):
        validate_inference_service(no_predictor)


def test_wrong_type_is_refused() -> None:
    body = _body()
    body["spec"]["predictor"]["minReplicas"] = "1"
    with pytest.raises(ConfigError, match=r"spec\.predictor\.minReplicas: expected int"):
        validate_inference_service(body)


def test_tensorrt_plan_from_another_tensorrt_release_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        build_inference_service(
            "mnist", "models", "s3://m/trt", "tensorrt", artifact=_artifact(trt="10.3.0.26")
        )
    assert "10.3.0.26" in str(info.value)
    assert images.TENSORRT_VERSION in str(info.value)


def test_tensorrt_plan_needs_metadata_and_matching_release_passes() -> None:
    with pytest.raises(ConfigError, match="tensorrt_version"):
        build_inference_service("mnist", "models", "s3://m/trt", "tensorrt")
    body = build_inference_service(
        "mnist", "models", "s3://m/trt", "tensorrt", artifact=_artifact(trt=images.TENSORRT_VERSION + ".33")
    )
    assert body["spec"]["predictor"]["model"]["modelFormat"] == {"name": "tensorrt"}
    with pytest.raises(ConfigError, match="framework='tensorrt'"):
        build_inference_service("mnist", "models", "s3://m/onnx", "onnx", artifact=_artifact())


def _package(torch_version: str = images.AOTI_TORCH_VERSION + "+cpu", cc: str | None = None) -> ModelArtifact:
    return _artifact("aoti", None).model_copy(
        update={"file": "model.pt2", "torch_version": torch_version, "compute_capability": cc}
    )


def test_an_aoti_package_goes_to_the_triton_torch_runtime() -> None:
    body = build_inference_service("mnist", "models", "s3://m/pt2", "aoti", artifact=_package())
    model = body["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "aoti"} and model["runtime"] == "slipway-triton-torch"
    validate_inference_service(body)
    gpu = build_inference_service(
        "mnist", "models", "s3://m/pt2", "aoti", artifact=_package(cc=images.SERVING_COMPUTE_CAPABILITY),
        resources=ResourceSettings(gpu=1),
    )  # fmt: skip
    assert gpu["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"


@pytest.mark.parametrize(
    ("artifact", "gpus", "named"),
    [
        (None, 0, "must come with its metadata"),
        (_package("2.12.0+cpu"), 0, "compiled with torch 2.12.0"),
        (_package(cc="8.0"), 1, "compute capability 8.0"),
        (_package(cc=images.SERVING_COMPUTE_CAPABILITY), 0, "needs a GPU"),
    ],
)
def test_an_aoti_package_the_serving_image_cannot_run_is_refused(
    artifact: ModelArtifact | None, gpus: int, named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        build_inference_service(
            "mnist", "models", "s3://m/pt2", "aoti", artifact=artifact, resources=ResourceSettings(gpu=gpus)
        )


def test_a_runtime_that_cannot_serve_the_format_is_refused_naming_the_right_one() -> None:
    with pytest.raises(
        ConfigError, match=r"runtime 'slipway-triton' serves onnx, tensorrt, not 'aoti'.*slipway-triton-torch"
    ):
        build_inference_service(
            "mnist", "models", "s3://m/pt2", "aoti", artifact=_package(), runtime="slipway-triton"
        )
    with pytest.raises(ConfigError, match="'slipway-triton-torch' serves aoti, not 'onnx'"):
        build_inference_service("mnist", "models", "s3://m/onnx", "onnx", runtime="slipway-triton-torch")


@pytest.mark.parametrize("mode", ["Standard", "RawDeployment"])
def test_canary_in_standard_mode_is_refused_at_build_time(mode: str) -> None:
    with pytest.raises(ConfigError, match="ignored by KServe"):
        _body(deployment_mode=mode)
    body = _body(deployment_mode=mode, canary_traffic_percent=None)
    assert TAG_ROUTING_ANNOTATION not in body["metadata"]["annotations"]


def test_settings_name_the_wrong_key() -> None:
    with pytest.raises(ValidationError, match="replicas"):
        InferenceServiceSettings(  # type: ignore[call-arg]
            name="mnist", namespace="models", storage_uri="s3://x", model_format="onnx", replicas=2
        )
    with pytest.raises(ConfigError, match=r"max_replicas \(1\) < min_replicas \(2\)"):
        _body(min_replicas=2, max_replicas=1)
    with pytest.raises(ConfigError, match="name"):
        build_inference_service("MNIST_model", "models", "s3://x", "onnx")
    with pytest.raises(ConfigError, match="local path"):
        build_inference_service("mnist", "models", "/tmp/model", "onnx")


def test_deployment_mode_prefers_status_and_normalises_legacy_names() -> None:
    annotated = {"metadata": {"annotations": {DEPLOYMENT_MODE_ANNOTATION: "Serverless"}}}
    assert deployment_mode_of(annotated) == "Knative"
    assert deployment_mode_of({**annotated, "status": {"deploymentMode": "RawDeployment"}}) == "Standard"
    assert deployment_mode_of({"metadata": {}}) is None

"""Explanations and model cards served by a real `slipway serve` process (docs/serving.md, "Explanations").

The repository is written by the project's own builders (write_model, write_explain_checkpoint) from a real
checkpoint of a model with a known answer: its class-1 logit reads one pixel, so every method must put all
attribution there. Requests are raw HTTP (httpx), JSON and Triton's binary extension.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from serving_helpers import INPUT_SHAPE

from slipway.compression.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
from slipway.core.config import ModelSpec, TritonConfig
from slipway.core.models import build_model, save_model
from slipway.serving.explainer import MAX_ROWS
from slipway.serving.restricted import HTTP_FLAG, SERVE_GROUPS, parse_restricted
from slipway.serving.server import ServerHandle, start_server
from slipway.serving.service import ServerOptions
from slipway.serving.triton_repository import MODEL_CARD_FILES, write_explain_checkpoint, write_model

PIXEL = (0, 2, 5)  # (channel, row, column) the class-1 logit reads
OTHER_PIXEL = (0, 6, 1)
CLASSES = 10
CARD_MD = "# Model card: pixel\n\nReads one pixel.\n"
CARD_HTML = "<html><body><h1>Model card: pixel</h1></body></html>\n"
OPTIONS = ServerOptions(max_queue=16, timeout_s=30.0, max_body_bytes=1 << 20, shutdown_grace_s=1.0)


def pixel_checkpoint(path: Path, pixel: tuple[int, int, int]) -> torch.nn.Module:
    """A zoo mlp with no hidden layer whose class-1 logit is 2 * x[pixel] (class 0 has bias 0.5)."""
    spec = ModelSpec(architecture="mlp", kwargs={"hidden": []})
    model = build_model(spec, INPUT_SHAPE, CLASSES)
    linear = model[-1]
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[1, int(np.ravel_multi_index(pixel, INPUT_SHAPE))] = 2.0
        linear.bias[0] = 0.5
    save_model(model, spec, INPUT_SHAPE, CLASSES, path)
    return model.eval()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pixel: checkpoint + card; bare: no checkpoint; tampered: checkpoint bytes changed after packaging;
    reloadable: a checkpoint the reload test replaces."""
    root = tmp_path_factory.mktemp("explain")
    checkpoint = root / "pixel.pt"
    onnx_path = root / "pixel.onnx"
    export_onnx(pixel_checkpoint(checkpoint, PIXEL), INPUT_SHAPE, onnx_path)
    repo = root / "repo"
    triton = TritonConfig(max_batch_size=64, max_queue_delay_us=500)
    for name in ("pixel", "bare", "tampered", "reloadable"):
        write_model(repo, name, onnx_path, triton)
        if name != "bare":
            write_explain_checkpoint(repo / name / "1", checkpoint)
    (repo / "pixel" / "1" / MODEL_CARD_FILES["markdown"]).write_text(CARD_MD)
    (repo / "pixel" / "1" / MODEL_CARD_FILES["html"]).write_text(CARD_HTML)
    with (repo / "tampered" / "1" / "explain" / "model.pt").open("ab") as f:
        f.write(b"\0")
    return repo


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerHandle]:
    """`slipway serve` in its own process; explicit mode so that the reload test can reload a model."""
    with start_server(
        repo,
        threads=1,
        options=OPTIONS,
        subprocess_mode=True,
        model_control_mode="explicit",
        load_models=["*"],
        metrics_port=None,
    ) as handle:
        yield handle


@pytest.fixture(scope="module")
def http(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        yield client


def images(n: int, value: float = 3.0, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(0.0, 1.0, (n, *INPUT_SHAPE)).astype(np.float32)
    x[(slice(None), *PIXEL)] = value
    return x


def explain_body(x: np.ndarray, **parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "req-1",
        "inputs": [
            {"name": INPUT_NAME, "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}
        ],
    }
    if parameters:
        body["parameters"] = parameters
    return body


def outputs(response: httpx.Response) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    return {
        o["name"]: np.asarray(o["data"], dtype=np.float64).reshape(o["shape"])
        for o in response.json()["outputs"]
    }


def error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert isinstance(message, str) and message
    return message


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency", "occlusion"])
def test_attribution_lands_on_the_one_pixel_the_model_reads(http: httpx.Client, method: str) -> None:
    x = images(4)
    response = http.post("/v2/models/pixel/explain", json=explain_body(x, method=method, target=1))
    got = outputs(response)
    body = response.json()
    assert body["model_name"] == "pixel" and body["model_version"] == "1" and body["id"] == "req-1"
    assert body["parameters"]["method"] == method
    by_name = {o["name"]: o for o in body["outputs"]}
    assert by_name["attributions"]["datatype"] == "FP32"
    assert by_name["attributions"]["shape"] == list(x.shape)
    attributions = got["attributions"]
    flat = np.abs(attributions.reshape(len(x), -1))
    assert (flat.argmax(axis=1) == np.ravel_multi_index(PIXEL, INPUT_SHAPE)).all()
    assert (flat.max(axis=1) / flat.sum(axis=1) > 0.99).all(), flat.sum(axis=1)
    # IG and occlusion: the logit's whole change, 2 * 3.0; saliency: its gradient, 2.
    expected = 2.0 if method == "saliency" else 6.0
    np.testing.assert_allclose(attributions[(slice(None), *PIXEL)], expected, rtol=1e-3)
    assert got["target"].tolist() == [1] * len(x)
    np.testing.assert_allclose(got[OUTPUT_NAME][:, 1], 6.0, rtol=1e-5)  # the served model's prediction


def test_default_target_is_the_served_prediction(http: httpx.Client) -> None:
    x = np.concatenate([images(2, value=3.0), images(2, value=0.0, seed=1)])  # classes 1, 1, 0, 0
    got = outputs(http.post("/v2/models/pixel/explain", json=explain_body(x, method="saliency")))
    assert got["target"].tolist() == got[OUTPUT_NAME].argmax(axis=1).tolist() == [1, 1, 0, 0]
    # class 0 reads no pixel: nothing to attribute
    assert np.abs(got["attributions"][2:]).max() == 0.0


def test_version_and_kserve_v1_paths_answer_the_same(http: httpx.Client) -> None:
    body = explain_body(images(2), target=[1, 1], steps=8)
    plain = outputs(http.post("/v2/models/pixel/explain", json=body))
    versioned = outputs(http.post("/v2/models/pixel/versions/1/explain", json=body))
    kserve = outputs(http.post("/v1/models/pixel:explain", json=body))
    for other in (versioned, kserve):
        np.testing.assert_allclose(other["attributions"], plain["attributions"], rtol=1e-6)
    assert http.post("/v1/models/pixel:explain", json=body).json()["parameters"]["steps"] == 8


def test_binary_request_and_response(http: httpx.Client) -> None:
    x = images(3)
    blob = x.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": INPUT_NAME,
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            "parameters": {"binary_data_output": True, "method": "occlusion", "target": 1},
        }
    ).encode()
    response = http.post(
        "/v2/models/pixel/explain",
        content=header + blob,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    size = int(response.headers["Inference-Header-Content-Length"])
    meta = json.loads(response.content[:size])
    offset, tensors = size, {}
    for out in meta["outputs"]:
        n = out["parameters"]["binary_data_size"]
        dtype = {"FP32": np.float32, "INT64": np.int64}[out["datatype"]]
        tensors[out["name"]] = np.frombuffer(response.content[offset : offset + n], dtype).reshape(
            out["shape"]
        )
        offset += n
    assert offset == len(response.content)
    assert tensors["attributions"].shape == x.shape
    np.testing.assert_allclose(tensors["attributions"][(slice(None), *PIXEL)], 6.0, rtol=1e-5)
    assert tensors["target"].tolist() == [1, 1, 1]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (explain_body(images(1), method="shap"), "parameters.method"),
        (explain_body(images(1), methods="saliency"), "parameters: unrecognized ['methods']"),
        (explain_body(images(1), target=CLASSES), "parameters.target"),
        (explain_body(images(2), target=[1]), "parameters.target"),
        (explain_body(images(1), target="cat"), "parameters.target"),
        (explain_body(images(1), steps=1), "parameters.steps"),
        (explain_body(images(MAX_ROWS + 1)), f"at most {MAX_ROWS} rows"),
        (explain_body(np.zeros((1, 1, 7, 7), np.float32)), f"input {INPUT_NAME!r}"),
        (explain_body(images(1, value=float("nan"))), "finite"),
        ({"inputs": []}, "'inputs'"),
    ],
    ids=[
        "method",
        "unknown-parameter",
        "target-range",
        "target-length",
        "target-type",
        "steps",
        "rows",
        "shape",
        "nan",
        "no-inputs",
    ],
)
def test_bad_requests_get_400_naming_the_field(http: httpx.Client, body: dict[str, Any], field: str) -> None:
    response = http.post(
        "/v2/models/pixel/explain",
        content=json.dumps(body).encode(),  # NaN as Python's json writes it
        headers={"Content-Type": "application/json"},
    )
    assert field in error(response, 400)


def test_unknown_model_and_missing_checkpoint_are_404(http: httpx.Client) -> None:
    assert "unknown model 'nope'" in error(
        http.post("/v2/models/nope/explain", json=explain_body(images(1))), 404
    )
    message = error(http.post("/v2/models/bare/explain", json=explain_body(images(1))), 404)
    assert "bare version 1 has no PyTorch checkpoint" in message
    assert "not loaded" in error(
        http.post("/v2/models/pixel/versions/7/explain", json=explain_body(images(1))), 404
    )


def test_tampered_checkpoint_is_refused_and_the_server_keeps_serving(http: httpx.Client) -> None:
    message = error(http.post("/v2/models/tampered/explain", json=explain_body(images(1))), 409)
    assert "sha256" in message and "model.pt" in message
    # again: still refused (never cached), and everything else still answers
    error(http.post("/v2/models/tampered/explain", json=explain_body(images(1))), 409)
    assert outputs(http.post("/v2/models/pixel/explain", json=explain_body(images(1), target=1)))
    infer = http.post("/v2/models/tampered/infer", json=explain_body(images(2)))
    np.testing.assert_allclose(outputs(infer)[OUTPUT_NAME][:, 1], 6.0, rtol=1e-5)


def test_reload_drops_the_cached_checkpoint(http: httpx.Client, repo: Path, tmp_path: Path) -> None:
    body = explain_body(images(1), method="saliency", target=1)
    flat = outputs(http.post("/v2/models/reloadable/explain", json=body))["attributions"].reshape(-1)
    assert flat.argmax() == np.ravel_multi_index(PIXEL, INPUT_SHAPE)
    # A new checkpoint (another pixel) for the same version, then Triton's load API reloads the model.
    pixel_checkpoint(tmp_path / "other.pt", OTHER_PIXEL)
    write_explain_checkpoint(repo / "reloadable" / "1", tmp_path / "other.pt")
    assert http.post("/v2/repository/models/reloadable/load").status_code == 200
    flat = outputs(http.post("/v2/models/reloadable/explain", json=body))["attributions"].reshape(-1)
    assert flat.argmax() == np.ravel_multi_index(OTHER_PIXEL, INPUT_SHAPE)


def test_inference_still_works_after_the_errors(http: httpx.Client) -> None:
    for _ in range(2):
        error(http.post("/v2/models/pixel/explain", json=explain_body(images(1), method="nope")), 400)
        error(http.post("/v2/models/bare/explain", json=explain_body(images(1))), 404)
    got = outputs(http.post("/v2/models/pixel/infer", json=explain_body(images(3))))
    assert got[OUTPUT_NAME].argmax(axis=1).tolist() == [1, 1, 1]
    assert http.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize("path", ["/v2/models/pixel/card", "/v2/models/pixel/versions/1/card"])
def test_model_card_in_markdown_or_html(http: httpx.Client, path: str) -> None:
    markdown = http.get(path)
    assert markdown.status_code == 200 and markdown.text == CARD_MD
    assert markdown.headers["content-type"].startswith("text/markdown")
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    for accept in ("text/html", browser):
        html = http.get(path, headers={"Accept": accept})
        assert html.status_code == 200 and html.text == CARD_HTML
        assert html.headers["content-type"].startswith("text/html")
    ranked = http.get(path, headers={"Accept": "text/html;q=0.5, text/markdown"})
    assert ranked.text == CARD_MD


def test_model_card_404s(http: httpx.Client) -> None:
    assert "bare version 1 has no model card" in error(http.get("/v2/models/bare/card"), 404)
    assert "unknown model" in error(http.get("/v2/models/nope/card"), 404)
    assert "not loaded" in error(http.get("/v2/models/pixel/versions/3/card"), 404)


def test_explain_is_in_the_inference_group_and_the_card_in_metadata(repo: Path) -> None:
    restricted = parse_restricted(
        ["inference:infer-key=s3cret", "metadata:meta-key=open"], HTTP_FLAG, SERVE_GROUPS
    )
    options = ServerOptions(timeout_s=30.0, http_restricted=restricted)
    with (
        start_server(repo, threads=1, options=options, metrics_port=None) as server,
        httpx.Client(base_url=server.url, timeout=60.0) as http,
    ):
        body = explain_body(images(1), target=1)
        assert "infer-key" in error(http.post("/v2/models/pixel/explain", json=body), 403)
        assert "infer-key" in error(http.post("/v1/models/pixel:explain", json=body), 403)
        allowed = http.post("/v2/models/pixel/explain", json=body, headers={"infer-key": "s3cret"})
        assert outputs(allowed)["attributions"].shape == (1, *INPUT_SHAPE)
        assert "meta-key" in error(http.get("/v2/models/pixel/card"), 403)
        assert http.get("/v2/models/pixel/card", headers={"meta-key": "open"}).text == CARD_MD


def test_the_server_starts_without_torch() -> None:
    """Explanations import torch and Captum on first use only: serving ONNX keeps its startup cost."""
    code = (
        "import sys, slipway.serving.server, slipway.serving.explainer; "
        "print(sorted(m for m in ('torch', 'captum') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr

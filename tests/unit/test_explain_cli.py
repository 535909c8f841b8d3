"""`slipway explain` as a user runs it, in a subprocess: a real checkpoint registered in a real MLflow (SQLite)
store, fetched by version or alias with its digest checked, explained row by row; bad input exits 2 naming what
was wrong, a tampered registry checkpoint is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch

from slipway import registry
from slipway.compression.onnx_export import export_onnx
from slipway.core.config import ModelSpec, RegistryConfig
from slipway.core.models import build_model, load_model, save_model

# The command alone (main.py registers it as `slipway explain`): the same click command, in its own process.
COMMAND = [sys.executable, "-c", "from slipway.cli.explain import explain; explain()"]


def _explain(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def registered(tmp_path_factory, digits_splits) -> dict:
    """A seeded student checkpoint, registered as version 1 of `m` (alias challenger) with its checkpoint."""
    tmp = tmp_path_factory.mktemp("explain-cli")
    s = digits_splits
    spec = ModelSpec(architecture="student_cnn", kwargs={"width": 4})
    torch.manual_seed(0)
    model = build_model(spec, s.input_shape, s.num_classes)
    checkpoint = tmp / "student.pt"
    save_model(model, spec, s.input_shape, s.num_classes, checkpoint)
    export_onnx(model, s.input_shape, tmp / "student.onnx")
    uri, artifacts = registry.local_store(tmp / "store")
    store = RegistryConfig(tracking_uri=uri, artifact_location=artifacts, experiment="t", model_name="m")
    run_id = registry.start_run(store, "key", artifacts, {})
    digest = registry.log_checkpoint(store, run_id, None, checkpoint)
    version = registry.register_onnx(store, run_id, tmp / "student.onnx", {}, s.x_test[:2]).version
    rows = tmp / "rows.npz"
    np.savez(rows, x=s.x_test[:24], y=s.y_test[:24])
    return {
        "tmp": tmp, "uri": uri, "store": store, "run_id": run_id, "version": version, "digest": digest,
        "checkpoint": checkpoint, "rows": rows,
    }  # fmt: skip


def test_explain_a_registered_version_row_by_row(registered: dict, tmp_path: Path, digits_splits) -> None:
    out = tmp_path / "by-version"
    done = _explain(
        "--model", registered["version"], "--tracking-uri", registered["uri"], "--model-name", "m",
        "--input", str(registered["rows"]), "-o", str(out), "--set", "explain.steps=8",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sanity check" in done.stdout
    result = json.loads((out / "explanation.json").read_text())
    assert result["model"]["version"] == registered["version"] and result["model"]["name"] == "m"
    assert result["model"]["sha256"] == registered["digest"]  # the very bytes logged with the version
    model, _ = load_model(registered["checkpoint"])
    x, y = digits_splits.x_test[:24], digits_splits.y_test[:24]
    predicted = model(torch.from_numpy(x)).argmax(1).numpy()
    assert [p["predicted"] for p in result["predictions"]] == predicted.tolist()
    assert [p["target"] for p in result["predictions"]] == predicted.tolist()  # default: the prediction
    assert [p["label"] for p in result["predictions"]] == y.tolist()
    assert result["accuracy"] == pytest.approx(float((predicted == y).mean()))
    assert result["methods"] == ["integrated_gradients", "saliency", "occlusion"] and result["steps"] == 8
    with np.load(out / "attributions.npz") as attributions:
        assert sorted(attributions.files) == sorted(result["methods"])
        assert all(attributions[m].shape == x.shape for m in attributions.files)
    sanity = result["sanity"]
    assert set(sanity["by_method"]) == set(result["methods"]) and sanity["threshold"] == 0.5
    assert sanity["passed"] == all(v <= 0.5 for v in sanity["by_method"].values())
    assert (out / "attributions.png").read_bytes()[:4] == b"\x89PNG"


def test_explain_by_alias_towards_one_class(registered: dict, tmp_path: Path) -> None:
    out = tmp_path / "by-alias"
    done = _explain(
        "--model", "challenger", "--tracking-uri", registered["uri"], "--model-name", "m",
        "--input", str(registered["rows"]), "-o", str(out), "--method", "saliency", "--target-class", "3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "explanation.json").read_text())
    assert result["methods"] == ["saliency"] and result["target"] == "3"
    assert {p["target"] for p in result["predictions"]} == {3}
    assert result["model"]["version"] == registered["version"]


def test_bad_input_exits_2_naming_what_was_wrong(registered: dict, tmp_path: Path) -> None:
    checkpoint, out = str(registered["checkpoint"]), str(tmp_path / "out")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((3, 1, 4, 8), np.float32))
    cases = {
        "missing checkpoint": (
            ["--model", str(tmp_path / "nope.pt"), "--input", str(registered["rows"])],
            "nope.pt",
        ),
        "missing input": (["--model", checkpoint, "--input", str(tmp_path / "nope.npz")], "nope.npz"),
        "wrong shape": (["--model", checkpoint, "--input", str(wrong)], "the model takes (N, 1, 8, 8)"),
        "unknown method": (
            ["--model", checkpoint, "--input", str(registered["rows"]), "--method", "lime"],
            "'lime' is not one of",
        ),
    }
    for case, (args, expected) in cases.items():
        done = _explain(*args, "-o", out)
        assert done.returncode == 2, (case, done.stderr[-2000:])
        assert expected in done.stderr, (case, done.stderr[-2000:])
    assert not Path(out).exists()  # nothing written for a refused command


def test_a_tampered_registry_checkpoint_is_refused(registered: dict, tmp_path: Path) -> None:
    client = registry.mlflow_client(registered["store"])
    stored = (
        Path(urlparse(client.get_run(registered["run_id"]).info.artifact_uri).path)
        / "checkpoint"
        / "model.pt"
    )
    original = stored.read_bytes()
    stored.write_bytes(original + b"tampered")
    try:
        done = _explain(
            "--model", registered["version"], "--tracking-uri", registered["uri"], "--model-name", "m",
            "--input", str(registered["rows"]), "-o", str(tmp_path / "out"),
        )  # fmt: skip
    finally:
        stored.write_bytes(original)
    assert done.returncode == 1 and registered["digest"] in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "out" / "explanation.json").exists()

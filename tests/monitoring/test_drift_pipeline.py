"""The recurring drift pipeline's components through `.python_func`, on a real store filled over real HTTP."""

from pathlib import Path

import numpy as np
import pytest
from kfp import dsl

from slipway.components.drift import detect_drift, export_captured_window, retrain
from slipway.core.config import load_config
from slipway.core.errors import ConfigError


def _fill_store(data_dir: Path, x: np.ndarray) -> None:
    """Capture events the way the service does, through its own ingest path."""
    from starlette.testclient import TestClient

    from slipway.monitoring.service import MonitorSettings, create_app

    app = create_app(MonitorSettings(data_dir=data_dir, drift_every=0))
    with TestClient(app) as client:
        for i, row in enumerate(x):
            body = {
                "id": f"r{i}",
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, *row.shape],
                        "datatype": "FP32",
                        "data": row.ravel().tolist(),
                    }
                ],
            }
            assert client.post("/v1/batches", json=body).status_code == 200


@pytest.mark.parametrize(("shift", "expected"), [(0.0, False), (0.3, True)])
def test_window_export_and_drift_check(tmp_path: Path, digits_splits, shift: float, expected: bool) -> None:
    ref = tmp_path / "reference.npz"
    np.savez(ref, x=digits_splits.x_train[:500], y=digits_splits.y_train[:500])
    _fill_store(tmp_path / "data", np.clip(digits_splits.x_test[:300] + shift, 0, 1.5))
    cfg = load_config(
        "drift",
        [f"monitor.data_dir={tmp_path / 'data'}", f"monitor.reference={ref}", "monitor.window_size=300"],
    )
    config = cfg.model_dump(mode="json", exclude_none=True)
    window = dsl.Dataset(name="window", uri=str(tmp_path / "window"), metadata={})
    export_captured_window.python_func(config=config, window=window)
    with np.load(window.path) as w:
        assert w["x"].shape == (300, 1, 8, 8)
    report = dsl.HTML(name="report", uri=str(tmp_path / "report"), metadata={})
    summary = dsl.Artifact(name="summary", uri=str(tmp_path / "summary"), metadata={})
    assert detect_drift.python_func(config=config, window=window, report=report, summary=summary) is expected
    assert "<html" in Path(report.path).read_text()[:2000].lower()
    assert summary.metadata["drift_detected"] is expected


def _retrain(tmp_path: Path, overrides: list[str]) -> tuple[str, dsl.Dataset, dsl.Artifact]:
    config = load_config("drift", overrides).model_dump(mode="json", exclude_none=True)
    window = tmp_path / "window"
    if not window.exists():
        with window.open("wb") as fh:
            np.savez(fh, x=np.zeros((3, 1, 8, 8), np.float32), y=np.array([1, -1, 2]))
    dataset = dsl.Dataset(name="dataset", uri=str(tmp_path / "dataset"), metadata={})
    outcome = dsl.Artifact(name="outcome", uri=str(tmp_path / "outcome"), metadata={})
    status = retrain.python_func(
        config=config,
        window=dsl.Dataset(name="window", uri=str(window), metadata={}),
        dataset=dataset,
        outcome=outcome,
    )
    return status, dataset, outcome


def test_retrain_is_off_by_default_and_needs_a_package(tmp_path: Path) -> None:
    status, _, outcome = _retrain(tmp_path, [])
    assert status == "off" and outcome.metadata == {"status": "off"}
    with pytest.raises(
        ConfigError, match=r"monitor\.retrain_package: not set; compile the training pipeline"
    ):
        _retrain(tmp_path, ["monitor.retrain=true"])


def test_retrain_waits_for_enough_labels(tmp_path: Path) -> None:
    """Two labelled rows in the window, min_labels 3: nothing is built or launched, and the outcome says why."""
    from slipway.cli.compile import compile_pipeline, resolve_pipeline

    package = compile_pipeline(*resolve_pipeline("quickstart", None, []), tmp_path / "retrain.yaml")
    on = ["monitor.retrain=true", f"monitor.retrain_package={package}", "monitor.retrain_target=local"]
    status, dataset, outcome = _retrain(tmp_path, [*on, "monitor.min_labels=3"])
    assert status == "too_few_labels" and outcome.metadata["min_labels"] == 3
    assert Path(dataset.path).read_bytes() == b""


def test_retrain_package_must_be_a_compiled_slipway_pipeline(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.yaml"
    bogus.write_text("pipelineInfo: {name: other}\n")
    on = ["monitor.retrain=true", f"monitor.retrain_package={bogus}"]
    with pytest.raises(ConfigError, match=r"monitor\.kfp_host: not set; where should the retrain run go"):
        _retrain(tmp_path, on)
    with pytest.raises(ConfigError, match=r"monitor\.retrain_package: .* not a pipeline compiled by"):
        _retrain(tmp_path, [*on, "monitor.retrain_target=local"])


def test_pipeline_reads_window_and_reference_from_a_running_monitor(
    tmp_path: Path, digits, digits_reference: Path
) -> None:
    """The cluster path: no shared volume, the steps fetch both files from the real monitor over real HTTP."""
    import httpx

    from benchmarks import monitoring as bench

    from .conftest import start, v2_request

    running = start(tmp_path / "data", digits_reference, ["--drift-every", "0"])
    try:
        shifted = (digits.pool_x[:300] * 1.2 + 2.0).astype(np.float32)  # brighter and offset
        with httpx.Client(base_url=running.url, timeout=30) as client:
            for i in range(0, len(shifted), 50):
                assert client.post("/v1/batches", json=v2_request(shifted[i : i + 50])).status_code == 200
            assert client.get("/v1/window", params={"size": "0"}).status_code == 400
            assert "size: expected an integer" in client.get("/v1/window?size=abc").json()["message"]
            assert client.get("/v1/reference").content == digits_reference.read_bytes()
        config = load_config(
            "drift",
            [f"monitor.url={running.url}", "monitor.window_size=300", "monitor.data_dir=/nonexistent"],
        ).model_dump(mode="json", exclude_none=True)
        window = dsl.Dataset(name="window", uri=str(tmp_path / "window"), metadata={})
        export_captured_window.python_func(config=config, window=window)
        with np.load(window.path) as w:
            assert w["x"].shape == (300, 1, 8, 8)
            np.testing.assert_allclose(w["x"], shifted, rtol=1e-6)
        report = dsl.HTML(name="report", uri=str(tmp_path / "report"), metadata={})
        summary = dsl.Artifact(name="summary", uri=str(tmp_path / "summary"), metadata={})
        assert detect_drift.python_func(config=config, window=window, report=report, summary=summary) is True
    finally:
        bench.stop_monitor(running.proc)  # type: ignore[arg-type]


def test_unreachable_monitor_is_an_error_naming_the_url(tmp_path: Path) -> None:
    from slipway.core.errors import DataError
    from slipway.serving.server import free_port

    url = f"http://127.0.0.1:{free_port()}"
    config = load_config("drift", [f"monitor.url={url}"]).model_dump(mode="json", exclude_none=True)
    window = dsl.Dataset(name="window", uri=str(tmp_path / "window"), metadata={})
    with pytest.raises(DataError, match=rf"GET {url}/v1/window\?size=500: .*monitor reachable"):
        export_captured_window.python_func(config=config, window=window)


def test_monitor_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match=r"monitor\.url"):
        load_config("drift", ["monitor.url=ftp://monitor:8081"])

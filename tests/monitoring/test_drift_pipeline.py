"""The recurring drift pipeline's components through `.python_func`, on a real store filled over real HTTP."""

from pathlib import Path

import numpy as np
import pytest
from kfp import dsl

from slipway.components.drift import detect_drift, export_captured_window, retrain
from slipway.config import load_config
from slipway.errors import ConfigError


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


def test_retrain_is_off_by_default_and_needs_a_host() -> None:
    cfg = load_config("drift")
    assert retrain.python_func(config=cfg.model_dump(mode="json", exclude_none=True)) == "off"
    on = load_config("drift", ["monitor.retrain=true"]).model_dump(mode="json", exclude_none=True)
    with pytest.raises(ConfigError, match=r"monitor\.kfp_host is not set"):
        retrain.python_func(config=on)

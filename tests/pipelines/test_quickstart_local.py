"""The quickstart pipeline for real under kfp.local: subprocess tasks, MLflow on SQLite, ONNX Runtime.

Two runs into one output folder: the first creates the champion, the second registers a new version and
is gated against it, as a second `make demo` does.
"""

import json
from pathlib import Path

from chance import quantize_budgets

from slipway.cli.local_run import run_local
from slipway.core.config import load_config
from slipway.core.data import load_dataset
from slipway.pipelines import get_pipeline
from slipway.serving.triton_repository import list_models, read_model_config

SUMMARY_MODEL_FIELDS = {
    "accuracy",
    "params",
    "size_bytes",
    "latency_ms_p50_b1",
    "latency_ms_p99_b1",
    "throughput_ips_b64",
    "format",
}


def test_two_local_runs_register_and_gate_against_the_champion(tmp_path: Path, fast_overrides) -> None:
    entry = get_pipeline("quickstart")
    cfg = load_config("quickstart", fast_overrides)
    # INT8/FP16 budgets from the measured flip rate: with the defaults (64 of 64 parity samples must agree)
    # the quantize step fails a correct quantizer by chance, and the run with it. Not marked `stochastic`
    # (4 minutes a round): test_quantize's marked tests rerun the same budgets.
    budgets = quantize_budgets(cfg.export.parity_samples, len(load_dataset(cfg.data, cfg.seed).y_test))
    overrides = [f"compress.quantize.{key}={value}" for key, value in budgets.items()]
    cfg = load_config(
        "quickstart", [*fast_overrides, "gate.min_accuracy=0.2", "gate.max_accuracy_drop=1.0", *overrides]
    )
    first = run_local(entry, cfg, tmp_path)
    assert first.status == "succeeded", first.error
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["duration_s"] > 0
    for role in ("teacher", "student"):
        assert summary[role].keys() >= SUMMARY_MODEL_FIELDS
    assert summary["student"]["params"] * 4 <= summary["teacher"]["params"]
    assert summary["gate"]["passed"] is True
    assert summary["registry"]["version"] == "1"
    assert summary["registry"]["aliases"] == ["challenger", "champion"]
    assert summary["registry"]["tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    repo = Path(summary["model_repository"])
    assert repo == tmp_path / "model_repository"
    (model,) = list_models(repo)
    assert read_model_config(repo / model).platform == "onnxruntime_onnx"

    second = run_local(entry, cfg, tmp_path)
    assert second.registry is not None and second.registry.version == "2"
    assert second.gate is not None
    assert any("champion v1" in reason for reason in second.gate.reasons)


def test_failed_step_gives_failed_summary(tmp_path: Path, fast_overrides) -> None:
    cfg = load_config("quickstart", [*fast_overrides, f"data.source={tmp_path / 'missing.npz'}"])
    summary = run_local(get_pipeline("quickstart"), cfg, tmp_path)
    assert summary.status == "failed"
    assert "prepare-data" in (summary.error or "")
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"

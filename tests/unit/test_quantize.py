"""INT8 (static QDQ) and FP16 with ONNX Runtime: parity with FP32, metadata, the fallback ladder, rejection."""

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from chance import quantize_budgets

from slipway.compression import quantize
from slipway.compression.onnx_export import export_onnx
from slipway.compression.quantize import (
    Attempt,
    CalibrationReader,
    boundary_nodes,
    calibration_sample,
    convert_fp16,
    quantize_int8,
)
from slipway.core.artifacts import read_metadata, sha256_file, write_metadata
from slipway.core.config import ModelSpec, QuantizeConfig, TrainConfig
from slipway.core.models import build_model, count_parameters
from slipway.training.loop import train


def _budgets(cfg: QuantizeConfig, n_parity: int, n_test: int) -> QuantizeConfig:
    """Budgets from the measured flip rate (see `chance.quantize_budgets`), not the product's defaults, which a
    correct quantizer on this ~85% student misses by chance (another machine's float order is another draw)."""
    return cfg.model_copy(update=quantize_budgets(n_parity, n_test))


@pytest.fixture(scope="module")
def fp32_onnx(digits_splits, tmp_path_factory) -> Path:
    s = digits_splits
    torch.manual_seed(0)
    model = build_model(ModelSpec(architecture="student_cnn"), s.input_shape, s.num_classes)
    out = tmp_path_factory.mktemp("q")
    train(model, s.x_train, s.y_train, s.x_val, s.y_val, TrainConfig(epochs=4, patience=4), 0, out / "ckpt")
    path = out / "student.onnx"
    artifact = export_onnx(model, s.input_shape, path)
    write_metadata(path, artifact.model_copy(update={"extra": {"params": count_parameters(model)}}))
    return path


@pytest.mark.stochastic
def test_int8_qdq_passes_parity_and_carries_metadata(fp32_onnx: Path, digits_splits, tmp_path: Path) -> None:
    s = digits_splits
    out = tmp_path / "int8.onnx"
    calib = calibration_sample(s.x_train, 128, seed=0)
    cfg = _budgets(QuantizeConfig(), len(s.x_val), len(s.y_test))
    result = quantize_int8(fp32_onnx, out, calib, s.x_val, s.x_test, s.y_test, cfg, threads=1)
    assert result.attempts[0].passed, result.attempts  # the first rung, not a fallback
    assert result.top1_agreement >= cfg.parity_min_agreement
    assert result.accuracy_delta_points <= cfg.accuracy_budget_points
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    meta = read_metadata(out)
    assert meta.precision == "int8" and meta.extra["params"] == read_metadata(fp32_onnx).extra["params"]
    assert meta.extra["calibration_method"] == "minmax"
    assert out.stat().st_size < fp32_onnx.stat().st_size


@pytest.mark.stochastic
@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_other_calibration_methods(method: str, fp32_onnx: Path, digits_splits, tmp_path: Path) -> None:
    s = digits_splits
    cfg = _budgets(
        QuantizeConfig(calibration_method=method, calibration_samples=64, per_channel=False),
        200,
        len(s.y_test),
    )
    result = quantize_int8(
        fp32_onnx,
        tmp_path / "q.onnx",
        calibration_sample(s.x_train, 64, 0),
        s.x_val[:200],
        s.x_test,
        s.y_test,
        cfg,
        threads=1,
    )
    assert result.attempts[0].calibration_method == method and result.attempts[0].passed
    assert result.top1_agreement >= cfg.parity_min_agreement


@pytest.mark.stochastic
def test_fp16_keeps_fp32_io_and_passes_parity(fp32_onnx: Path, digits_splits, tmp_path: Path) -> None:
    s = digits_splits
    out = tmp_path / "fp16.onnx"
    cfg = _budgets(QuantizeConfig(), len(s.x_val), len(s.y_test))
    result = convert_fp16(fp32_onnx, out, s.x_val, s.x_test, s.y_test, cfg, threads=1)
    meta = read_metadata(out)
    assert meta.precision == "fp16" and meta.inputs[0].dtype == "float32"
    assert result.top1_agreement >= cfg.parity_min_agreement
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in onnx.load(str(out)).graph.initializer)


def test_over_budget_after_every_fallback_is_kept_rejected_not_raised(
    fp32_onnx, digits_splits, tmp_path, monkeypatch
) -> None:
    s = digits_splits
    seen: list[tuple[str | None, list[str]]] = []
    accuracies = [0.5, 0.7, 0.6]  # the second rung is the best miss: it is the one kept

    def over_budget(label, method, excluded, candidate, reference, cfg, threads) -> Attempt:
        seen.append((method, excluded))
        acc = accuracies[len(seen) - 1]
        return Attempt(
            label=label,
            calibration_method=method,
            excluded_nodes=excluded,
            accuracy=acc,
            accuracy_delta_points=(0.9 - acc) * 100,
            top1_agreement=0.6,
            passed=False,
            failure="over",
        )

    monkeypatch.setattr(quantize, "_measure", over_budget)
    out = tmp_path / "q.onnx"
    result = quantize_int8(
        fp32_onnx,
        out,
        calibration_sample(s.x_train, 32, 0),
        s.x_val[:50],
        s.x_test,
        s.y_test,
        QuantizeConfig(),
        threads=1,
    )
    boundary = boundary_nodes(fp32_onnx)
    assert seen == [("minmax", []), ("minmax", boundary), ("percentile", boundary)]
    assert result.rejected is not None and len(result.attempts) == 3
    assert re.search(r"INT8 .* after every fallback: .*\+40\.00 points.*agreement 0\.6000", result.rejected)
    assert "kept int8 (minmax, first/last in FP32)" in result.rejected
    assert result.accuracy == 0.7 and result.accuracy_delta_points == pytest.approx(20.0)
    meta = read_metadata(out)  # a later step with only the file sees the rejection and the kept attempt
    assert meta.extra["rejected"] == result.rejected
    assert meta.extra["fp32_excluded_nodes"] == boundary and meta.extra["accuracy"] == 0.7
    assert meta.sha256 == sha256_file(out) and {"QuantizeLinear"} <= {
        n.op_type for n in onnx.load(str(out)).graph.node
    }


def test_within_budget_outcome_is_not_rejected(fp32_onnx, digits_splits, tmp_path, monkeypatch) -> None:
    def first_fits(label, method, excluded, candidate, reference, cfg, threads) -> Attempt:
        return Attempt(
            label=label,
            calibration_method=method,
            excluded_nodes=excluded,
            accuracy=0.9,
            accuracy_delta_points=0.0,
            top1_agreement=1.0,
            passed=True,
        )

    monkeypatch.setattr(quantize, "_measure", first_fits)
    s, out = digits_splits, tmp_path / "fp16.onnx"
    result = convert_fp16(fp32_onnx, out, s.x_val[:50], s.x_test, s.y_test, QuantizeConfig(), threads=1)
    assert result.rejected is None and len(result.attempts) == 1
    assert "rejected" not in read_metadata(out).extra


def test_a_broken_model_still_raises(digits_splits, tmp_path: Path) -> None:
    s, bad = digits_splits, tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(Exception, match="INVALID_PROTOBUF"):  # onnxruntime's pybind error type
        convert_fp16(
            bad, tmp_path / "out.onnx", s.x_val[:10], s.x_test, s.y_test, QuantizeConfig(), threads=1
        )
    assert not (tmp_path / "out.onnx").exists()


def test_boundary_nodes_are_first_and_last_compute_nodes(fp32_onnx: Path) -> None:
    nodes = onnx.load(str(fp32_onnx)).graph.node
    first, last = boundary_nodes(fp32_onnx)
    types = {n.name: n.op_type for n in nodes}
    assert types[first] == "Conv" and types[last] in ("Gemm", "MatMul")


def test_calibration_reader_batches_and_rewinds() -> None:
    x = np.arange(70, dtype=np.float32).reshape(70, 1)
    reader = CalibrationReader(x, "input", batch_size=32)
    sizes = []
    while (batch := reader.get_next()) is not None:
        sizes.append(len(batch["input"]))
    assert sizes == [32, 32, 6] and len(reader) == 3
    reader.rewind()
    assert reader.get_next()["input"][0, 0] == 0
    assert len(calibration_sample(x, 500, seed=0)) == 70

"""ONNX export: one self-contained file, dynamic batch, opset >= 17, metadata from the graph, parity checks."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from slipway.compression.onnx_export import check_parity, export_onnx, onnx_predict, ort_session
from slipway.core.artifacts import read_metadata, sha256_file
from slipway.core.config import ModelSpec
from slipway.core.errors import ExportError
from slipway.core.models import build_model


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 40)])
def test_export_is_single_file_dynamic_batch_and_matches_torch(tmp_path: Path, shape) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(architecture="student_cnn"), shape, 10).eval()
    path = tmp_path / "m.onnx"
    artifact = export_onnx(model, shape, path, opset=18)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.meta.json"]  # no external data
    assert onnx.load(str(path)).opset_import[0].version >= 17
    assert artifact.inputs[0].name == "input" and artifact.inputs[0].shape == [-1, *shape]
    assert artifact.outputs[0].shape == [-1, 10] and artifact.outputs[0].dtype == "float32"
    assert artifact.sha256 == sha256_file(path) == read_metadata(path).sha256
    session = ort_session(path)
    for batch in (1, 7):
        x = np.random.default_rng(batch).normal(size=(batch, *shape)).astype(np.float32)
        expected = model(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(onnx_predict(session, x), expected, atol=1e-4)


def test_parity_passes_within_bounds() -> None:
    logits = np.random.default_rng(0).normal(size=(100, 5)).astype(np.float32)
    result = check_parity(logits, logits + 1e-6, 1e-4, 0.999, "x")
    assert result.top1_agreement == 1.0 and result.max_abs_diff < 1e-5


def test_parity_failure_prints_both_numbers() -> None:
    logits = np.random.default_rng(0).normal(size=(100, 5)).astype(np.float32)
    bad = logits.copy()
    bad[0] = -bad[0]
    with pytest.raises(
        ExportError,
        match=r"max abs logit difference [\d.e+-]+ \(limit 0.0001\), top-1 agreement 99\.0000% \(minimum 99\.90%\)",
    ):
        check_parity(logits, bad, 1e-4, 0.999, "x")


def test_export_failure_is_an_export_error(tmp_path: Path) -> None:
    class Unexportable(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("this layer cannot be traced")

    with pytest.raises(ExportError, match="ONNX export failed for Unexportable"):
        export_onnx(Unexportable(), (3,), tmp_path / "u.onnx")

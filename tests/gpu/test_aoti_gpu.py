"""AOTInductor on a CUDA GPU: FP32, FP16 and BF16 packages of a small CNN, each within its parity bound against
eager FP32, recording the GPU's compute capability, served by slipway serve's torch runtime (batch 64), and
refused where the capability differs. Skipped without CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible: CUDA packages need one"),
]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_package_parity_metadata_and_serving(tmp_path: Path, precision: str) -> None:
    from slipway.compression.aoti import check_aoti_parity, compile_aoti
    from slipway.core.aoti_package import check_serving_compatibility
    from slipway.core.errors import ConfigError
    from slipway.core.models import student_cnn
    from slipway.serving.torch_runtime import TorchSession, local_capability

    torch.manual_seed(0)
    model = student_cnn((1, 8, 8), 10)
    path = tmp_path / f"m-{precision}.pt2"
    artifact = compile_aoti(model, (1, 8, 8), path, precision, "cuda")  # type: ignore[arg-type]
    assert artifact.compute_capability == local_capability() and artifact.extra["device"] == "cuda"
    x = np.random.default_rng(0).standard_normal((256, 1, 8, 8)).astype(np.float32)
    check_aoti_parity(model, path, x, precision, "cuda")  # type: ignore[arg-type]
    session = TorchSession(path.read_bytes(), artifact, path.name)
    (out,) = session.run(["logits"], {"input": x[:64]})
    assert out.shape == (64, 10) and out.dtype == np.float32
    with pytest.raises(ConfigError, match="compute capability"):
        check_serving_compatibility(artifact, torch.__version__, "1.0", "a GPU of another generation")

"""DDP on one GPU with bf16 autocast (nccl, SyncBatchNorm path off at world size 1): skipped without CUDA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible: DDP + bf16 needs one"),
]


def test_ddp_one_gpu_bf16_learns_digits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, digits_splits
) -> None:
    """A one-process nccl group, the teacher under DDP with bf16 autocast; the checkpoint is the bare model."""
    from slipway.core.config import ModelSpec, TrainConfig
    from slipway.core.models import build_model
    from slipway.training import distributed
    from slipway.training.loop import CHECKPOINT, accuracy, train

    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_PORT", str(29500 + os.getpid() % 1000))
    s = digits_splits
    cfg = TrainConfig(epochs=5, lr=3e-3, device="cuda", precision="bf16")
    torch.manual_seed(0)
    model = build_model(ModelSpec(architecture="teacher_cnn"), s.input_shape, s.num_classes)
    with distributed.process_group("cuda") as env:
        assert env.backend == "nccl" and env.device.type == "cuda"
        result = train(model, s.x_train, s.y_train, s.x_val, s.y_val, cfg, 0, tmp_path)
    assert result.best_val_accuracy > 0.9
    assert accuracy(model, s.x_test, s.y_test) > 0.9  # the model comes back on the CPU, in fp32
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert not any(k.startswith("module.") for k in state["model"])
    assert all(t.device.type == "cpu" for t in state["model"].values())


def test_bench_script_runs_on_the_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    """The acceptance benchmark runs (a few steps) and prints a row per mode."""
    import json

    from benchmarks import ddp as bench_ddp

    assert bench_ddp.main(["--device", "cuda", "--steps", "3", "--warmup", "1", "--batch-size", "16"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["mode"] for r in rows] == ["eager-fp32", "ddp-bf16"]
    assert all(r["images_per_s"] > 0 for r in rows)

"""The optimize pipeline for real under kfp.local, starting from a model artifact (a Slipway checkpoint)."""

import json
from pathlib import Path

import torch

from slipway.cli.local_run import run_local
from slipway.core.config import DistillConfig, ModelSpec, load_config
from slipway.core.data import load_dataset
from slipway.core.models import build_model, save_model
from slipway.pipelines import get_pipeline
from slipway.training.loop import train


def test_optimize_a_checkpoint_and_register_a_challenger(tmp_path: Path, fast_overrides) -> None:
    cfg = load_config(
        "optimize",
        [
            *fast_overrides,
            "gate.min_accuracy=0.2",
            "gate.max_accuracy_drop=1.0",
            "compress.prune.finetune.epochs=2",
            "compress.accuracy_budget_points=100",
        ],
    )
    splits = load_dataset(cfg.data, cfg.seed)
    spec = ModelSpec(architecture="student_cnn")
    torch.manual_seed(0)
    model = build_model(spec, splits.input_shape, splits.num_classes)
    train(
        model,
        splits.x_train,
        splits.y_train,
        splits.x_val,
        splits.y_val,
        DistillConfig(epochs=3),
        0,
        tmp_path / "ckpt",
    )
    checkpoint = tmp_path / "source.pt"
    save_model(model, spec, splits.input_shape, splits.num_classes, checkpoint)
    cfg = load_config(
        "optimize",
        [
            *fast_overrides,
            "gate.min_accuracy=0.2",
            "gate.max_accuracy_drop=1.0",
            "compress.prune.finetune.epochs=2",
            f"source.checkpoint={checkpoint}",
        ],
    )

    summary = run_local(get_pipeline("optimize"), cfg, tmp_path / "run")
    assert summary.status in ("succeeded", "rejected"), summary.error
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["student"]["format"] in {"onnx-fp32", "onnx-pruned-fp32", "onnx-int8", "onnx-fp16"}
    assert written["teacher"]["params"] == sum(p.numel() for p in model.parameters())
    assert written["registry"]["aliases"] == ["challenger"]  # the optimize pipeline never promotes
    assert written["gate"]["reasons"]

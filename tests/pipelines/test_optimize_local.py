"""The optimize pipeline for real under kfp.local, starting from a model artifact (a Slipway checkpoint), with the
opt-in AOTInductor candidate: compiled by its own step, measured and chosen by select-format, registered through
its ONNX twin and named (with its digest) as the served file of the version's model card."""

import json
from pathlib import Path

import torch

from slipway.cli.local_run import run_local
from slipway.core.artifacts import sha256_file
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
            "compress.candidates=[aoti-fp32]",  # the only eligible one: onnx-fp32 is measured as the reference
            "compress.accuracy_budget_points=100",
            f"source.checkpoint={checkpoint}",
        ],
    )

    summary = run_local(get_pipeline("optimize"), cfg, tmp_path / "run")
    assert summary.status in ("succeeded", "rejected"), summary.error
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["student"]["format"] == "aoti-fp32"
    assert written["teacher"]["params"] == sum(p.numel() for p in model.parameters())
    assert written["registry"]["aliases"] == ["challenger"]  # the optimize pipeline never promotes
    assert written["gate"]["reasons"]

    runs = sorted((tmp_path / "run" / "pipeline").iterdir())
    (package,) = runs[-1].glob("compile-aoti/aoti_model")
    package_meta = json.loads(Path(f"{package}.meta.json").read_text())
    assert package_meta["framework"] == "aoti" and package_meta["sha256"] == sha256_file(package)
    selection = json.loads(next(runs[-1].glob("select-format/selection_report")).read_text())
    assert selection["chosen"] == "aoti-fp32"
    measured = {c["format"]: c["evaluation"] for c in selection["candidates"] if c["evaluation"]}
    assert (
        measured["aoti-fp32"]["runtime"] == "torch-aoti" and measured["onnx-fp32"]["runtime"] == "onnxruntime"
    )
    (served,) = runs[-1].glob("select-format/served_model")
    assert sha256_file(served) == package_meta["sha256"]  # the compiled package is what would be served
    (registered,) = runs[-1].glob("select-format/chosen_model")
    twin = json.loads(Path(f"{registered}.meta.json").read_text())
    assert twin["framework"] == "onnx" and twin["extra"]["format"] == "onnx-pruned-fp32"
    assert twin["extra"]["served_format"] == "aoti-fp32"
    card = json.loads(next(runs[-1].glob("register*/model_card/model_card.json")).read_text())
    assert card["details"]["served_file"] == "model.pt2"
    assert card["details"]["served_sha256"] == package_meta["sha256"]

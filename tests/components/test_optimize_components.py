"""The compression components through `.python_func`, chained on real files (unit level, no KFP runner)."""

import json
from pathlib import Path

import pytest
from chance import quantize_budgets
from kfp import dsl

from slipway.components.data import prepare_data
from slipway.components.distill import distill_student
from slipway.components.export import export_onnx
from slipway.components.prune import prune
from slipway.components.quantize import quantize
from slipway.components.select_format import select_format
from slipway.components.source import resolve_source
from slipway.components.train import train_teacher
from slipway.core import data as data_lib
from slipway.registry import find_run


@pytest.mark.stochastic
def test_compression_components_chain(tmp_path: Path, fast_config) -> None:
    cfg = fast_config.model_copy(deep=True)
    cfg.compress.quantize.fp16 = False  # a disabled precision must flow through as "not produced"
    # INT8 budgets from the measured flip rate: the defaults (64 of 64 parity samples must agree) fail a
    # correct quantizer by chance.
    n_test = len(data_lib.load_dataset(cfg.data, cfg.seed).y_test)
    budgets = quantize_budgets(cfg.export.parity_samples, n_test)
    cfg.compress.quantize = cfg.compress.quantize.model_copy(update=budgets)
    config = cfg.model_dump(mode="json", exclude_none=True)
    a = lambda kind, name: kind(name=name, uri=str(tmp_path / name), metadata={})  # noqa: E731
    dataset, reference = a(dsl.Dataset, "dataset"), a(dsl.Dataset, "reference")
    run_id = prepare_data.python_func(config=config, run_key="opt", dataset=dataset, reference=reference)
    teacher, student = a(dsl.Model, "teacher"), a(dsl.Model, "student")
    train_teacher.python_func(config=config, run_id=run_id, dataset=dataset, model=teacher)
    distill_student.python_func(config=config, run_id=run_id, dataset=dataset, teacher=teacher, model=student)

    pruned = a(dsl.Model, "pruned")
    val = prune.python_func(
        config=config, run_id=run_id, dataset=dataset, model=student, teacher=teacher, pruned_model=pruned
    )
    assert 0 <= val <= 1 and pruned.metadata["params_after"] < pruned.metadata["params_before"]

    onnx = {n: a(dsl.Model, f"{n}.onnx") for n in ("teacher", "student", "pruned")}
    for name, model in (("teacher", teacher), ("student", student), ("pruned", pruned)):
        export_onnx.python_func(config=config, dataset=dataset, model=model, onnx_model=onnx[name])
    int8, fp16 = a(dsl.Model, "int8.onnx"), a(dsl.Model, "fp16.onnx")
    quantize.python_func(
        config=config,
        run_id=run_id,
        dataset=dataset,
        onnx_model=onnx["pruned"],
        int8_model=int8,
        fp16_model=fp16,
    )
    assert int8.metadata["top1_agreement"] >= budgets["parity_min_agreement"]
    assert fp16.metadata == {"skipped": True}

    chosen, report, cm, metrics = (
        a(dsl.Model, "chosen.onnx"),
        a(dsl.Artifact, "report"),
        a(dsl.Artifact, "cm"),
        a(dsl.Metrics, "metrics"),
    )
    fmt = select_format.python_func(
        config=config,
        run_id=run_id,
        dataset=dataset,
        teacher=teacher,
        teacher_onnx=onnx["teacher"],
        student=student,
        student_onnx=onnx["student"],
        pruned=pruned,
        pruned_onnx=onnx["pruned"],
        int8_onnx=int8,
        fp16_onnx=fp16,
        chosen_model=chosen,
        report=report,
        confusion_matrix=cm,
        metrics=metrics,
    )
    assert fmt in {"onnx-fp32", "onnx-pruned-fp32", "onnx-int8"}
    assert chosen.metadata["format"] == fmt and chosen.metadata["reasons"][0].startswith(f"chose {fmt}")
    assert any(r.startswith("onnx-fp16: not measured") for r in chosen.metadata["reasons"])
    evaluation = json.loads(Path(report.path).read_text())
    assert evaluation["student"]["format"] == fmt and evaluation["teacher_eager"]["runtime"] == "torch-eager"
    tags = find_run(cfg.registry, "opt").data.tags
    assert json.loads(tags["slipway.student"])["format"] == fmt
    assert json.loads(tags["slipway.optimize"])["chosen"] == fmt

    # The chosen format's PyTorch parent was logged into the run: the optimize pipeline can start from it.
    import mlflow

    from slipway.core.config import validate_config
    from slipway.steps.compress import CHECKPOINT_ARTIFACT

    client = mlflow.MlflowClient(cfg.registry.tracking_uri)  # not set_tracking_uri: it exports an env var
    assert [f.path for f in client.list_artifacts(run_id, CHECKPOINT_ARTIFACT)]
    source = a(dsl.Model, "source")
    resolve_source.python_func(
        config=validate_config({**config, "source": {"checkpoint": str(Path(pruned.path))}}).model_dump(
            mode="json", exclude_none=True
        ),
        run_id=run_id,
        model=source,
    )
    assert source.metadata["params"] == pruned.metadata["params_after"]

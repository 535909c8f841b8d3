"""Every quickstart component through `.python_func`, chained on real files (unit level, no KFP runner)."""

import json
from pathlib import Path

import numpy as np
from kfp import dsl

from slipway.components.data import prepare_data
from slipway.components.distill import distill_student
from slipway.components.export import export_onnx
from slipway.components.gate import gate
from slipway.components.package import package_triton
from slipway.components.promote import promote
from slipway.components.register import register
from slipway.components.select_format import select_format
from slipway.components.train import train_teacher
from slipway.registry import champion
from slipway.serving.triton_repository import read_model_config


def _artifact(kind, tmp_path: Path, name: str):
    return kind(name=name, uri=str(tmp_path / name), metadata={})


def test_components_chain(tmp_path: Path, fast_config) -> None:
    config = fast_config.model_dump(mode="json", exclude_none=True)
    a = lambda kind, name: _artifact(kind, tmp_path, name)  # noqa: E731
    dataset, reference = a(dsl.Dataset, "dataset"), a(dsl.Dataset, "reference")
    run_id = prepare_data.python_func(config=config, run_key="k", dataset=dataset, reference=reference)
    assert dataset.metadata["input_shape"] == [1, 8, 8] and len(dataset.metadata["fingerprint"]) == 64

    teacher, student = a(dsl.Model, "teacher"), a(dsl.Model, "student")
    assert 0 < train_teacher.python_func(config=config, run_id=run_id, dataset=dataset, model=teacher) <= 1
    assert (
        0
        < distill_student.python_func(
            config=config, run_id=run_id, dataset=dataset, teacher=teacher, model=student
        )
        <= 1
    )

    teacher_onnx, student_onnx = a(dsl.Model, "teacher.onnx"), a(dsl.Model, "student.onnx")
    export_onnx.python_func(config=config, dataset=dataset, model=teacher, onnx_model=teacher_onnx)
    export_onnx.python_func(config=config, dataset=dataset, model=student, onnx_model=student_onnx)
    assert student_onnx.metadata["parity"]["top1_agreement"] >= 0.999
    assert student_onnx.metadata["artifact"]["sha256"]

    report, cm, metrics = a(dsl.Artifact, "report"), a(dsl.Artifact, "cm"), a(dsl.Metrics, "metrics")
    chosen = a(dsl.Model, "chosen.onnx")
    not_produced = a(dsl.Model, "not-produced")  # a disabled compression output: no file
    fmt = select_format.python_func(
        config=config,
        run_id=run_id,
        dataset=dataset,
        teacher=teacher,
        teacher_onnx=teacher_onnx,
        student=student,
        student_onnx=student_onnx,
        pruned=not_produced,
        pruned_onnx=not_produced,
        int8_onnx=not_produced,
        fp16_onnx=not_produced,
        chosen_model=chosen,
        report=report,
        confusion_matrix=cm,
        metrics=metrics,
    )
    assert fmt == "onnx-fp32" and chosen.metadata["format"] == fmt
    assert set(json.loads(Path(report.path).read_text())) >= {"teacher", "teacher_eager", "student"}
    assert Path(cm.path).read_bytes()[:4] == b"\x89PNG"

    decision = a(dsl.Artifact, "decision")
    passed = gate.python_func(config=config, run_id=run_id, report=report, decision=decision)
    assert passed == decision.metadata["passed"] and decision.metadata["reasons"]

    version = register.python_func(
        config=config, run_id=run_id, student_onnx=chosen, report=report, decision=decision
    )
    assert version == "1"
    assert promote.python_func(config=config, run_id=run_id, version=version) == "challenger,champion"
    assert champion(fast_config.registry).version == "1"

    repo = a(dsl.Model, "repo")
    package_triton.python_func(config=config, run_id=run_id, student_onnx=student_onnx, model_repository=repo)
    assert read_model_config(Path(repo.path) / "slipway-quickstart").max_batch_size == 64
    with np.load(reference.path) as ref:
        assert ref["x"].shape[1:] == (1, 8, 8)

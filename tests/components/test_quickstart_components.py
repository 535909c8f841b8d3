"""Every component through `.python_func`, chained on real files (unit level, no KFP runner): start hands the
cached steps their slices, they write their numbers into their outputs, record puts them into MLflow."""

import json
from pathlib import Path

import numpy as np
from kfp import dsl

from slipway.components.compile_aoti import compile_aoti
from slipway.components.data import prepare_data
from slipway.components.distill import distill_student
from slipway.components.export import export_onnx
from slipway.components.gate import gate
from slipway.components.package import package_triton
from slipway.components.promote import promote
from slipway.components.prune import prune
from slipway.components.quantize import quantize
from slipway.components.record import record_run
from slipway.components.register import register
from slipway.components.select_format import select_format
from slipway.components.source import resolve_source
from slipway.components.start import start_run
from slipway.components.train import train_teacher
from slipway.core.config import to_parameter
from slipway.registry import champion, find_run, mlflow_client
from slipway.serving.triton_repository import read_model_config


def test_components_chain(tmp_path: Path, fast_config) -> None:
    cfg = fast_config.model_copy(deep=True)
    cfg.compress.quantize.fp16 = False  # a disabled precision must flow through as "not produced"
    a = lambda kind, name: kind(name=name, uri=str(tmp_path / name), metadata={})  # noqa: E731
    start = start_run.python_func(
        config=to_parameter(cfg), run_key="k", pipeline="quickstart", teacher_epochs=2
    )
    run_id, config = start.run_id, start.config
    assert start.teacher["train"]["epochs"] == 2 and "gate" not in start.teacher
    dataset, reference = a(dsl.Dataset, "dataset"), a(dsl.Dataset, "reference")
    prepare_data.python_func(config=start.data, dataset=dataset, reference=reference)
    assert dataset.metadata["input_shape"] == [1, 8, 8] and len(dataset.metadata["fingerprint"]) == 64

    teacher, student = a(dsl.Model, "teacher"), a(dsl.Model, "student")
    assert 0 < train_teacher.python_func(config=start.teacher, dataset=dataset, model=teacher) <= 1
    assert teacher.metadata["epochs_run"] == 2 and len(teacher.metadata["history"]) == 2
    accuracy = distill_student.python_func(
        config=start.student, dataset=dataset, teacher=teacher, model=student
    )
    assert 0 < accuracy <= 1 and student.metadata["params"] < teacher.metadata["params"]

    pruned = a(dsl.Model, "pruned")
    prune.python_func(
        config=start.prune, dataset=dataset, model=student, teacher=teacher, pruned_model=pruned
    )
    assert pruned.metadata["params_after"] < pruned.metadata["params_before"]
    onnx = {n: a(dsl.Model, f"{n}.onnx") for n in ("teacher", "student", "pruned")}
    for name, model in (("teacher", teacher), ("student", student), ("pruned", pruned)):
        export_onnx.python_func(config=start.export, dataset=dataset, model=model, onnx_model=onnx[name])
    assert onnx["student"].metadata["parity"]["top1_agreement"] >= 0.999
    int8, fp16 = a(dsl.Model, "int8.onnx"), a(dsl.Model, "fp16.onnx")
    quantize.python_func(
        config=start.quantize, dataset=dataset, onnx_model=onnx["pruned"], int8_model=int8, fp16_model=fp16
    )
    assert "accuracy" in int8.metadata and fp16.metadata == {"skipped": True}

    aoti = a(dsl.Model, "aoti.pt2")  # aoti-fp32 is opt-in: not in the default candidates, so not compiled
    compile_aoti.python_func(config=start.aoti, dataset=dataset, model=pruned, aoti_model=aoti)
    assert aoti.metadata == {"skipped": True}
    chosen, served, checkpoint = (
        a(dsl.Model, "chosen.onnx"),
        a(dsl.Model, "served"),
        a(dsl.Model, "chosen.pt"),
    )
    report, selection, cm = a(dsl.Artifact, "report"), a(dsl.Artifact, "selection"), a(dsl.Artifact, "cm")
    fmt = select_format.python_func(
        config=start.select,
        dataset=dataset,
        teacher=teacher,
        teacher_onnx=onnx["teacher"],
        student=student,
        student_onnx=onnx["student"],
        pruned=pruned,
        pruned_onnx=onnx["pruned"],
        int8_onnx=int8,
        fp16_onnx=fp16,
        aoti_fp32=aoti,
        chosen_model=chosen,
        served_model=served,
        checkpoint=checkpoint,
        report=report,
        selection_report=selection,
        confusion_matrix=cm,
        metrics=a(dsl.Metrics, "metrics"),
    )
    assert fmt in {"onnx-fp32", "onnx-pruned-fp32", "onnx-int8"} and chosen.metadata["format"] == fmt
    assert selection.metadata["dropped"]["onnx-fp16"] == "compress.quantize.fp16 is false"
    assert selection.metadata["dropped"]["aoti-fp32"] == "not in compress.candidates"
    assert Path(served.path).read_bytes() == Path(chosen.path).read_bytes()  # an ONNX choice is served as is
    assert set(json.loads(Path(report.path).read_text())) >= {"teacher", "teacher_eager", "student"}
    assert Path(cm.path).read_bytes()[:4] == b"\x89PNG"

    ui_metrics, classification = a(dsl.Metrics, "ui-metrics"), a(dsl.ClassificationMetrics, "ui-cm")
    record_run.python_func(
        config=config,
        run_id=run_id,
        dataset=dataset,
        teacher=teacher,
        student=student,
        pruned=pruned,
        int8_model=int8,
        fp16_model=fp16,
        report=report,
        selection_report=selection,
        confusion_matrix=cm,
        metrics=ui_metrics,
        classification_metrics=classification,
    )
    run = find_run(fast_config.registry, "k")
    assert json.loads(run.data.tags["slipway.student"])["format"] == fmt
    assert run.data.tags["slipway.produced_by.teacher"] == run_id  # produced here, not reused from a cache
    # The KFP UI's view of the chosen candidate: its numbers and its test-split confusion matrix.
    chosen_evaluation = json.loads(Path(report.path).read_text())["student"]
    assert ui_metrics.metadata["accuracy"] == chosen_evaluation["accuracy"]
    assert ui_metrics.metadata["size_bytes"] == chosen_evaluation["size_bytes"] > 0
    matrix = classification.metadata["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == [str(k) for k in range(10)]
    assert matrix["rows"] == [{"row": row} for row in chosen_evaluation["confusion_matrix"]]
    # MLflow: one point per epoch for each trained model, so its UI draws the training curves.
    client = mlflow_client(fast_config.registry)
    for role, epochs in (("teacher", 2), ("student", student.metadata["epochs_run"])):
        for metric in ("loss", "val_accuracy", "val_loss"):
            history = client.get_metric_history(run_id, f"{role}.{metric}")
            assert [m.step for m in history] == list(range(1, epochs + 1)), (role, metric)

    decision = a(dsl.Artifact, "decision")
    passed = gate.python_func(
        config=config, run_id=run_id, report=report, dataset=dataset, chosen_model=chosen, decision=decision
    )
    assert passed == decision.metadata["passed"] and decision.metadata["reasons"]
    card = a(dsl.Artifact, "model-card")
    version = register.python_func(
        config=config,
        run_id=run_id,
        student_onnx=chosen,
        served_model=served,
        checkpoint=checkpoint,
        teacher=teacher,
        dataset=dataset,
        report=report,
        selection_report=selection,
        explanation=a(dsl.Artifact, "explanation"),  # not run here: the card says "not computed"
        decision=decision,
        model_card=card,
    )
    assert version == "1" and card.metadata["version"] == "1"
    # The registered model carries its signature: the ONNX graph's input and output tensors.
    from urllib.parse import urlparse

    from mlflow.models import Model

    source = client.get_model_version(
        fast_config.registry.model_name, "1"
    ).source  # models:/<logged model id>
    logged = client.get_logged_model(source.removeprefix("models:/"))
    signature = Model.load(str(Path(urlparse(logged.artifact_location).path) / "MLmodel")).signature
    assert signature is not None
    assert [(s.name, s.shape) for s in signature.inputs.inputs] == [("input", (-1, 1, 8, 8))]
    assert signature.outputs.inputs[0].shape == (-1, 10)
    assert promote.python_func(config=config, run_id=run_id, version=version) == "challenger,champion"
    assert champion(fast_config.registry).version == "1"

    repo, drift_reference = a(dsl.Model, "repo"), a(dsl.Dataset, "drift-reference")
    package_triton.python_func(
        config=config,
        run_id=run_id,
        version=version,
        student_onnx=chosen,
        served_model=served,
        checkpoint=checkpoint,
        model_card=card,
        reference=reference,
        model_repository=repo,
        drift_reference=drift_reference,
    )
    assert read_model_config(Path(repo.path) / "slipway-quickstart").max_batch_size == 64
    assert (Path(repo.path) / "slipway-quickstart" / "1" / "model_card.md").is_file()
    with np.load(drift_reference.path) as ref:
        assert ref["probs"].shape == (len(ref["x"]), 10)  # the packaged model's outputs: output drift is on
    with np.load(reference.path) as ref:
        assert ref["x"].shape[1:] == (1, 8, 8)

    # The optimize pipeline starts from the registered champion: its checkpoint comes back verified.
    source = a(dsl.Model, "source")
    resolve_source.python_func(config=config, run_id=run_id, model=source)
    assert source.metadata["version"] == "1" and source.metadata["params"] > 0
    assert Path(source.path).read_bytes() == Path(checkpoint.path).read_bytes()

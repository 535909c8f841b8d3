"""The quickstart pipeline: data -> teacher -> student -> ONNX -> evaluate -> gate -> register -> Triton."""

from kfp import dsl

from slipway.components.data import prepare_data
from slipway.components.distill import distill_student
from slipway.components.evaluate import evaluate
from slipway.components.export import export_onnx
from slipway.components.gate import gate
from slipway.components.package import package_triton
from slipway.components.promote import promote
from slipway.components.register import register
from slipway.components.train import train_teacher


@dsl.pipeline(name="slipway-quickstart", description=__doc__)
def quickstart(config: dict, run_key: str):
    data = prepare_data(config=config, run_key=run_key).set_display_name("data")
    run_id = data.outputs["Output"]
    dataset = data.outputs["dataset"]
    teacher = train_teacher(config=config, run_id=run_id, dataset=dataset).set_display_name("train-teacher")
    student = distill_student(
        config=config, run_id=run_id, dataset=dataset, teacher=teacher.outputs["model"]
    ).set_display_name("distill-student")
    teacher_onnx = export_onnx(config=config, dataset=dataset, model=teacher.outputs["model"]).set_display_name(
        "export-teacher"
    )
    student_onnx = export_onnx(config=config, dataset=dataset, model=student.outputs["model"]).set_display_name(
        "export-student"
    )
    evaluation = evaluate(
        config=config,
        run_id=run_id,
        dataset=dataset,
        teacher=teacher.outputs["model"],
        teacher_onnx=teacher_onnx.outputs["onnx_model"],
        student_onnx=student_onnx.outputs["onnx_model"],
    ).set_display_name("evaluate")
    decision = gate(config=config, run_id=run_id, report=evaluation.outputs["report"]).set_display_name("gate")
    registered = register(
        config=config,
        run_id=run_id,
        student_onnx=student_onnx.outputs["onnx_model"],
        report=evaluation.outputs["report"],
        decision=decision.outputs["decision"],
    ).set_display_name("register")
    with dsl.If(decision.outputs["Output"] == True, name="gate-passed"):  # noqa: E712  (KFP condition syntax)
        promote(config=config, run_id=run_id, version=registered.outputs["Output"]).set_display_name("promote")
        package_triton(
            config=config, run_id=run_id, student_onnx=student_onnx.outputs["onnx_model"]
        ).set_display_name("package-triton")

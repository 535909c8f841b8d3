"""The quickstart pipeline: data -> teacher -> student -> prune -> ONNX -> INT8/FP16 -> select -> gate -> register
-> Triton -> deploy. The packaged and registered model is the fastest candidate format within the accuracy budget."""

from kfp import dsl

from slipway.components.data import prepare_data
from slipway.components.deploy import deploy
from slipway.components.distill import distill_student
from slipway.components.export import export_onnx
from slipway.components.gate import gate
from slipway.components.package import package_triton
from slipway.components.promote import promote
from slipway.components.prune import prune
from slipway.components.quantize import quantize
from slipway.components.register import register
from slipway.components.select_format import select_format
from slipway.components.train import train_teacher
from slipway.platform import configure_task, current_cluster


@dsl.pipeline(name="slipway-quickstart", description=__doc__)
def quickstart(config: dict, run_key: str):
    cluster = current_cluster()  # set only by slipway.compile; None under kfp.local
    data = prepare_data(config=config, run_key=run_key).set_display_name("data")
    configure_task(data, "cpu", cluster)
    run_id = data.outputs["Output"]
    dataset = data.outputs["dataset"]
    teacher = train_teacher(config=config, run_id=run_id, dataset=dataset).set_display_name("train-teacher")
    configure_task(teacher, "gpu", cluster)
    student = distill_student(
        config=config, run_id=run_id, dataset=dataset, teacher=teacher.outputs["model"]
    ).set_display_name("distill-student")
    configure_task(student, "gpu", cluster)
    teacher_onnx = export_onnx(
        config=config, dataset=dataset, model=teacher.outputs["model"]
    ).set_display_name("export-teacher")
    configure_task(teacher_onnx, "cpu", cluster)
    student_onnx = export_onnx(
        config=config, dataset=dataset, model=student.outputs["model"]
    ).set_display_name("export-student")
    configure_task(student_onnx, "cpu", cluster)
    pruned = prune(
        config=config,
        run_id=run_id,
        dataset=dataset,
        model=student.outputs["model"],
        teacher=teacher.outputs["model"],
    ).set_display_name("prune-student")
    configure_task(pruned, "gpu", cluster)
    pruned_onnx = export_onnx(
        config=config, dataset=dataset, model=pruned.outputs["pruned_model"]
    ).set_display_name("export-pruned")
    configure_task(pruned_onnx, "cpu", cluster)
    quantized = quantize(
        config=config, run_id=run_id, dataset=dataset, onnx_model=pruned_onnx.outputs["onnx_model"]
    ).set_display_name("quantize")
    configure_task(quantized, "cpu", cluster)
    selection = select_format(
        config=config,
        run_id=run_id,
        dataset=dataset,
        teacher=teacher.outputs["model"],
        teacher_onnx=teacher_onnx.outputs["onnx_model"],
        student=student.outputs["model"],
        student_onnx=student_onnx.outputs["onnx_model"],
        pruned=pruned.outputs["pruned_model"],
        pruned_onnx=pruned_onnx.outputs["onnx_model"],
        int8_onnx=quantized.outputs["int8_model"],
        fp16_onnx=quantized.outputs["fp16_model"],
    ).set_display_name("select-format")
    configure_task(selection, "cpu", cluster)
    chosen_onnx = selection.outputs["chosen_model"]
    decision = gate(config=config, run_id=run_id, report=selection.outputs["report"]).set_display_name("gate")
    configure_task(decision, "registry", cluster)
    registered = register(
        config=config,
        run_id=run_id,
        student_onnx=chosen_onnx,
        report=selection.outputs["report"],
        decision=decision.outputs["decision"],
    ).set_display_name("register")
    configure_task(registered, "registry", cluster)
    with dsl.If(decision.outputs["Output"] == True, name="gate-passed"):  # noqa: E712  (KFP condition syntax)
        promoted = promote(config=config, run_id=run_id, version=registered.outputs["Output"])
        configure_task(promoted.set_display_name("promote"), "registry", cluster)
        packaged = package_triton(config=config, run_id=run_id, student_onnx=chosen_onnx).set_display_name(
            "package-triton"
        )
        configure_task(packaged, "registry", cluster)
        deployed = deploy(
            config=config, run_id=run_id, model_repository=packaged.outputs["model_repository"]
        ).set_display_name("deploy")
        configure_task(deployed, "registry", cluster)

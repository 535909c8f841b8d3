"""The quickstart pipeline: data -> teacher -> student -> prune -> ONNX -> INT8/FP16 -> select -> gate -> register
-> Triton -> deploy. The packaged and registered model is the fastest candidate format within the accuracy budget."""

from kfp import dsl

from slipway.components.data import prepare_data
from slipway.components.deploy import deploy
from slipway.components.distill import distill_student
from slipway.components.export import export_onnx
from slipway.components.package import package_triton
from slipway.components.promote import promote
from slipway.components.train import train_teacher
from slipway.components.train_distributed import distill_student_distributed, train_teacher_distributed
from slipway.pipelines.compression import compress_select_register
from slipway.pipelines.platform import configure_task, current_cluster, trains_as_job


@dsl.pipeline(name="slipway-quickstart", description=__doc__)
def quickstart(config: dict, run_key: str):
    cluster = current_cluster()  # set only by slipway.cli.compile; None under kfp.local
    data = prepare_data(config=config, run_key=run_key).set_display_name("data")
    configure_task(data, "cpu", cluster)
    run_id = data.outputs["Output"]
    dataset = data.outputs["dataset"]
    # In a cluster, a role configured for more than one process or node trains as a Kubeflow TrainJob.
    train = train_teacher_distributed if trains_as_job("teacher") else train_teacher
    distill = distill_student_distributed if trains_as_job("student") else distill_student
    teacher = train(config=config, run_id=run_id, dataset=dataset).set_display_name("train-teacher")
    configure_task(teacher, "gpu", cluster)
    student = distill(
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
    stage = compress_select_register(
        config=config,
        run_id=run_id,
        dataset=dataset,
        cluster=cluster,
        model=student.outputs["model"],
        model_onnx=student_onnx.outputs["onnx_model"],
        teacher=teacher.outputs["model"],
        teacher_onnx=teacher_onnx.outputs["onnx_model"],
        prune_name="prune-student",
        register_name="register",
    )
    chosen_onnx = stage.selection.outputs["chosen_model"]
    with dsl.If(stage.decision.outputs["Output"] == True, name="gate-passed"):  # noqa: E712  (KFP condition syntax)
        promoted = promote(config=config, run_id=run_id, version=stage.registered.outputs["Output"])
        configure_task(promoted.set_display_name("promote"), "side_effects", cluster)
        packaged = package_triton(config=config, run_id=run_id, student_onnx=chosen_onnx).set_display_name(
            "package-triton"
        )
        configure_task(packaged, "side_effects", cluster)
        deployed = deploy(
            config=config, run_id=run_id, model_repository=packaged.outputs["model_repository"]
        ).set_display_name("deploy")
        configure_task(deployed, "side_effects", cluster)

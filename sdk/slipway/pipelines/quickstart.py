"""The quickstart pipeline: data -> teacher -> student (found by the compression search) -> prune -> ONNX -> INT8/FP16
-> select -> explain -> record -> gate -> register (with a model card) -> Triton -> deploy. The packaged and
registered model is the fastest candidate format within the accuracy budget.

`config` is the full configuration; the typed parameters after `run_key` override its keys of the same meaning
(see slipway.core.run_parameters). Each cached step receives only its slice of the config from `start`.
"""

from kfp import dsl

from slipway.components.data import prepare_data
from slipway.components.deploy import deploy
from slipway.components.export import export_onnx
from slipway.components.package import package_triton
from slipway.components.promote import promote
from slipway.components.search import record_search, search_student
from slipway.components.start import start_run
from slipway.components.train import train_teacher
from slipway.components.train_distributed import distill_student_distributed, train_teacher_distributed
from slipway.pipelines.compression import compress_select_register
from slipway.pipelines.platform import configure_task, current_cluster, trains_as_job


@dsl.pipeline(name="slipway-quickstart", description=__doc__)
def quickstart(
    config: dict,
    run_key: str = "",
    data_source: str = "",
    teacher_epochs: int = 0,
    student_epochs: int = 0,
    min_accuracy: float = -1.0,
    max_accuracy_drop: float = -1.0,
    model_name: str = "",
):
    cluster = current_cluster()  # set only by slipway.cli.compile; None under kfp.local
    start = start_run(
        config=config,
        run_key=run_key,
        pipeline="quickstart",
        data_source=data_source,
        teacher_epochs=teacher_epochs,
        student_epochs=student_epochs,
        min_accuracy=min_accuracy,
        max_accuracy_drop=max_accuracy_drop,
        model_name=model_name,
    ).set_display_name("start")
    configure_task(start, "side_effects", cluster)
    run_id, resolved, slices = start.outputs["run_id"], start.outputs["config"], start.outputs
    data = prepare_data(config=slices["data"]).set_display_name("data")
    configure_task(data, "cpu", cluster)
    dataset = data.outputs["dataset"]
    # In a cluster, a role configured for more than one process or node trains as a Kubeflow TrainJob.
    train = train_teacher_distributed if trains_as_job("teacher") else train_teacher
    teacher = train(config=slices["teacher"], dataset=dataset).set_display_name("train-teacher")
    configure_task(teacher, "gpu", cluster)
    if trains_as_job("student"):
        student = distill_student_distributed(
            config=slices["student"], dataset=dataset, teacher=teacher.outputs["model"]
        ).set_display_name("distill-student")
    else:
        # The compression search (compress.search) finds the student; off, it distils the fixed `student`.
        student = search_student(
            config=slices["student"], dataset=dataset, teacher=teacher.outputs["model"]
        ).set_display_name("search-student")
        searched = record_search(
            config=resolved,
            run_id=run_id,
            search_report=student.outputs["search_report"],
            search_summary=student.outputs["search_summary"],
            search_plot=student.outputs["search_plot"],
        ).set_display_name("record-search")
        configure_task(searched, "side_effects", cluster)
    configure_task(student, "gpu", cluster)
    teacher_onnx = export_onnx(
        config=slices["export"], dataset=dataset, model=teacher.outputs["model"]
    ).set_display_name("export-teacher")
    configure_task(teacher_onnx, "cpu", cluster)
    student_onnx = export_onnx(
        config=slices["export"], dataset=dataset, model=student.outputs["model"]
    ).set_display_name("export-student")
    configure_task(student_onnx, "cpu", cluster)
    stage = compress_select_register(
        config=resolved,
        slices=slices,
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
    version = stage.registered.outputs["Output"]
    with dsl.If(stage.decision.outputs["Output"] == True, name="gate-passed"):  # noqa: E712  (KFP condition syntax)
        promoted = promote(config=resolved, run_id=run_id, version=version)
        configure_task(promoted.set_display_name("promote"), "side_effects", cluster)
        packaged = package_triton(
            config=resolved,
            run_id=run_id,
            version=version,
            student_onnx=chosen_onnx,
            served_model=stage.selection.outputs["served_model"],
            checkpoint=stage.selection.outputs["checkpoint"],
            model_card=stage.registered.outputs["model_card"],
            reference=data.outputs["reference"],
        ).set_display_name("package-triton")
        configure_task(packaged, "side_effects", cluster)
        deployed = deploy(
            config=resolved, run_id=run_id, model_repository=packaged.outputs["model_repository"]
        ).set_display_name("deploy")
        configure_task(deployed, "side_effects", cluster)

"""The optimize pipeline: a registered model version (name + version or alias) or a checkpoint -> prune ->
ONNX -> INT8/FP16 -> select -> gate -> register as `challenger` (never promoted here); optional TensorRT."""

from kfp import dsl

from slipway.components.data import prepare_data
from slipway.components.export import export_onnx
from slipway.components.source import resolve_source
from slipway.components.start import start_run
from slipway.components.tensorrt import build_tensorrt
from slipway.pipelines.compression import compress_select_register
from slipway.pipelines.platform import configure_task, current_cluster


@dsl.pipeline(name="slipway-optimize", description=__doc__)
def optimize(
    config: dict,
    run_key: str = "",
    data_source: str = "",
    min_accuracy: float = -1.0,
    max_accuracy_drop: float = -1.0,
    model_name: str = "",
    build_tensorrt_engine: bool = False,
):
    cluster = current_cluster()  # set only by slipway.cli.compile; None under kfp.local
    start = start_run(
        config=config,
        run_key=run_key,
        pipeline="optimize",
        data_source=data_source,
        min_accuracy=min_accuracy,
        max_accuracy_drop=max_accuracy_drop,
        model_name=model_name,
    ).set_display_name("start")
    configure_task(start, "side_effects", cluster)
    run_id, resolved, slices = start.outputs["run_id"], start.outputs["config"], start.outputs
    data = prepare_data(config=slices["data"]).set_display_name("data")
    configure_task(data, "cpu", cluster)
    dataset = data.outputs["dataset"]
    # It reads the registry's live state (an alias moves): never cached.
    source = resolve_source(config=resolved, run_id=run_id).set_display_name("resolve-source")
    configure_task(source, "side_effects", cluster)
    source_model = source.outputs["model"]
    source_onnx = export_onnx(config=slices["export"], dataset=dataset, model=source_model).set_display_name(
        "export-source"
    )
    configure_task(source_onnx, "cpu", cluster)
    # No separate teacher here: the source model itself teaches its pruned version (self-distillation), and it
    # is the gate's reference ("teacher" in the report): the drop is what optimization cost.
    stage = compress_select_register(
        config=resolved,
        slices=slices,
        run_id=run_id,
        dataset=dataset,
        cluster=cluster,
        model=source_model,
        model_onnx=source_onnx.outputs["onnx_model"],
        teacher=source_model,
        teacher_onnx=source_onnx.outputs["onnx_model"],
        prune_name="prune",
        register_name="register-challenger",
    )
    with dsl.If(build_tensorrt_engine == True, name="tensorrt"):  # noqa: E712  (KFP condition syntax)
        engine = build_tensorrt(
            config=slices["tensorrt"],
            dataset=dataset,
            onnx_model=stage.pruned_onnx.outputs["onnx_model"],
            int8_model=stage.quantized.outputs["int8_model"],
        ).set_display_name("build-tensorrt")
        configure_task(engine, "gpu", cluster)

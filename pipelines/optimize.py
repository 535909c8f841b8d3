"""The optimize pipeline: a registered model version (name + version or alias) or a checkpoint -> prune ->
ONNX -> INT8/FP16 -> select -> gate -> register as `challenger` (never promoted here); optional TensorRT."""

from kfp import dsl

from slipway.components.data import prepare_data
from slipway.components.export import export_onnx
from slipway.components.gate import gate
from slipway.components.prune import prune
from slipway.components.quantize import quantize
from slipway.components.register import register
from slipway.components.select_format import select_format
from slipway.components.source import resolve_source
from slipway.components.tensorrt import build_tensorrt
from slipway.platform import configure_task, current_cluster


@dsl.pipeline(name="slipway-optimize", description=__doc__)
def optimize(config: dict, run_key: str, build_tensorrt_engine: bool = False):
    cluster = current_cluster()  # set only by slipway.compile; None under kfp.local
    data = prepare_data(config=config, run_key=run_key).set_display_name("data")
    configure_task(data, "cpu", cluster)
    run_id = data.outputs["Output"]
    dataset = data.outputs["dataset"]
    source = resolve_source(config=config, run_id=run_id).set_display_name("resolve-source")
    configure_task(source, "registry", cluster)
    source_model = source.outputs["model"]
    source_onnx = export_onnx(config=config, dataset=dataset, model=source_model).set_display_name(
        "export-source"
    )
    configure_task(source_onnx, "cpu", cluster)
    # No separate teacher here: the source model itself teaches its pruned version (self-distillation).
    pruned = prune(
        config=config, run_id=run_id, dataset=dataset, model=source_model, teacher=source_model
    ).set_display_name("prune")
    configure_task(pruned, "gpu", cluster)
    pruned_onnx = export_onnx(
        config=config, dataset=dataset, model=pruned.outputs["pruned_model"]
    ).set_display_name("export-pruned")
    configure_task(pruned_onnx, "cpu", cluster)
    quantized = quantize(
        config=config, run_id=run_id, dataset=dataset, onnx_model=pruned_onnx.outputs["onnx_model"]
    ).set_display_name("quantize")
    configure_task(quantized, "cpu", cluster)
    # The source is the gate's reference ("teacher" in the report): the drop is what optimization cost.
    selection = select_format(
        config=config,
        run_id=run_id,
        dataset=dataset,
        teacher=source_model,
        teacher_onnx=source_onnx.outputs["onnx_model"],
        student=source_model,
        student_onnx=source_onnx.outputs["onnx_model"],
        pruned=pruned.outputs["pruned_model"],
        pruned_onnx=pruned_onnx.outputs["onnx_model"],
        int8_onnx=quantized.outputs["int8_model"],
        fp16_onnx=quantized.outputs["fp16_model"],
    ).set_display_name("select-format")
    configure_task(selection, "cpu", cluster)
    decision = gate(config=config, run_id=run_id, report=selection.outputs["report"]).set_display_name("gate")
    configure_task(decision, "registry", cluster)
    registered = register(
        config=config,
        run_id=run_id,
        student_onnx=selection.outputs["chosen_model"],
        report=selection.outputs["report"],
        decision=decision.outputs["decision"],
    ).set_display_name("register-challenger")
    configure_task(registered, "registry", cluster)
    with dsl.If(build_tensorrt_engine == True, name="tensorrt"):  # noqa: E712  (KFP condition syntax)
        engine = build_tensorrt(
            config=config,
            run_id=run_id,
            dataset=dataset,
            onnx_model=pruned_onnx.outputs["onnx_model"],
            int8_model=quantized.outputs["int8_model"],
        ).set_display_name("build-tensorrt")
        configure_task(engine, "gpu", cluster)

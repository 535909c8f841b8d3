"""The stage the quickstart and optimize pipelines share: prune -> ONNX -> INT8/FP16 (and an AOTInductor package
when asked for) -> select the fastest format within the accuracy budget -> explain -> record -> gate -> register (with the version's model card). A plain
function that adds tasks to the pipeline calling it."""

from dataclasses import dataclass
from typing import Any

from kfp import dsl

from slipway.components.compile_aoti import compile_aoti
from slipway.components.explain import explain_models
from slipway.components.export import export_onnx
from slipway.components.gate import gate
from slipway.components.prune import prune
from slipway.components.quantize import quantize
from slipway.components.record import record_run
from slipway.components.register import register
from slipway.components.select_format import select_format
from slipway.core.cluster_config import ClusterConfig
from slipway.pipelines.platform import configure_task


@dataclass
class CompressionStage:
    pruned_onnx: dsl.PipelineTask
    quantized: dsl.PipelineTask
    selection: dsl.PipelineTask
    explained: dsl.PipelineTask
    recorded: dsl.PipelineTask
    decision: dsl.PipelineTask
    registered: dsl.PipelineTask


def compress_select_register(
    *,
    config: Any,
    slices: Any,
    run_id: Any,
    dataset: Any,
    cluster: ClusterConfig | None,
    model: Any,
    model_onnx: Any,
    teacher: Any,
    teacher_onnx: Any,
    prune_name: str,
    register_name: str,
) -> CompressionStage:
    """`model` is pruned with `teacher` distilling into it; the teacher is also the gate's reference, and the gate
    runs the chosen model and the registry's champion side by side on `dataset`.

    `config` (the resolved config) goes to the uncached steps, `slices` (start's outputs) to the cached ones.
    """
    pruned = prune(config=slices["prune"], dataset=dataset, model=model, teacher=teacher).set_display_name(
        prune_name
    )
    configure_task(pruned, "gpu", cluster)
    pruned_onnx = export_onnx(
        config=slices["export"], dataset=dataset, model=pruned.outputs["pruned_model"]
    ).set_display_name("export-pruned")
    configure_task(pruned_onnx, "cpu", cluster)
    quantized = quantize(
        config=slices["quantize"], dataset=dataset, onnx_model=pruned_onnx.outputs["onnx_model"]
    ).set_display_name("quantize")
    configure_task(quantized, "cpu", cluster)
    compiled = compile_aoti(
        config=slices["aoti"], dataset=dataset, model=pruned.outputs["pruned_model"]
    ).set_display_name("compile-aoti")
    configure_task(compiled, "cpu", cluster)
    selection = select_format(
        config=slices["select"],
        dataset=dataset,
        teacher=teacher,
        teacher_onnx=teacher_onnx,
        student=model,
        student_onnx=model_onnx,
        pruned=pruned.outputs["pruned_model"],
        pruned_onnx=pruned_onnx.outputs["onnx_model"],
        int8_onnx=quantized.outputs["int8_model"],
        fp16_onnx=quantized.outputs["fp16_model"],
        aoti_fp32=compiled.outputs["aoti_model"],
    ).set_display_name("select-format")
    configure_task(selection, "cpu", cluster)
    # Teacher and chosen student explained side by side; it logs into this run's MLflow run: never cached.
    explained = explain_models(
        config=config,
        run_id=run_id,
        dataset=dataset,
        teacher=teacher,
        student=selection.outputs["checkpoint"],
    ).set_display_name("explain")
    configure_task(explained, "side_effects", cluster)
    recorded = record_run(
        config=config,
        run_id=run_id,
        dataset=dataset,
        teacher=teacher,
        student=model,
        pruned=pruned.outputs["pruned_model"],
        int8_model=quantized.outputs["int8_model"],
        fp16_model=quantized.outputs["fp16_model"],
        report=selection.outputs["report"],
        selection_report=selection.outputs["selection_report"],
        confusion_matrix=selection.outputs["confusion_matrix"],
    ).set_display_name("record")
    configure_task(recorded, "side_effects", cluster)
    decision = gate(
        config=config,
        run_id=run_id,
        report=selection.outputs["report"],
        dataset=dataset,
        chosen_model=selection.outputs["chosen_model"],
    ).set_display_name("gate")
    decision.after(recorded)
    configure_task(decision, "side_effects", cluster)
    registered = register(
        config=config,
        run_id=run_id,
        student_onnx=selection.outputs["chosen_model"],
        served_model=selection.outputs["served_model"],
        checkpoint=selection.outputs["checkpoint"],
        teacher=teacher,
        dataset=dataset,
        report=selection.outputs["report"],
        selection_report=selection.outputs["selection_report"],
        explanation=explained.outputs["explanation"],
        decision=decision.outputs["decision"],
    ).set_display_name(register_name)
    configure_task(registered, "side_effects", cluster)
    return CompressionStage(pruned_onnx, quantized, selection, explained, recorded, decision, registered)

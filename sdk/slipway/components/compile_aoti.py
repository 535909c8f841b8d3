"""Component: the pruned student as an AOTInductor package (torch.export, CPU, FP32), a format-selection candidate
when `aoti-fp32` is in compress.candidates; otherwise its output says it was skipped."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def compile_aoti(
    config: dict,
    dataset: Input[Dataset],
    model: Input[Model],
    aoti_model: Output[Model],
):
    from pathlib import Path

    from slipway import steps

    result = steps.compile_aoti_candidate(
        steps.begin(config), Path(dataset.path), Path(model.path), Path(aoti_model.path)
    )
    aoti_model.metadata.update(
        {"framework": "aoti", **result["artifact"]["extra"], "parity": result["parity"]}
        if "artifact" in result
        else result
    )

"""Component: fetch the model the optimize pipeline starts from (a registered version or a checkpoint)."""

from kfp import dsl
from kfp.dsl import Model, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def resolve_source(config: dict, run_id: str, model: Output[Model]):
    from pathlib import Path

    from slipway import steps

    origin = steps.resolve_source(steps.begin(config), run_id, Path(model.path))
    model.metadata.update(
        {"framework": "pytorch", "role": "source", **{k: v for k, v in origin.items() if k != "spec"}}
    )

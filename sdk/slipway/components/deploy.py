"""Component: deploy the packaged Triton repository (KServe canary in a cluster, served smoke test locally)."""

from kfp import dsl
from kfp.dsl import Input, Model

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def deploy(config: dict, run_id: str, model_repository: Input[Model]) -> str:
    """Returns the deployment target it acted on."""
    from pathlib import Path

    from slipway import steps

    outcome = steps.deploy_model(
        steps.begin(config), run_id, Path(model_repository.path), model_repository.uri
    )
    return outcome["target"]

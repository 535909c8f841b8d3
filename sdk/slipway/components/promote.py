"""Component: move the registry's `champion` alias to the version that passed the gate."""

from kfp import dsl

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def promote(config: dict, run_id: str, version: str) -> str:
    from slipway import steps

    return ",".join(steps.promote_candidate(steps.begin(config), run_id, version).aliases)

"""Component: the release gate (thresholds, drop vs teacher, comparison with the registry's champion)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def gate(config: dict, run_id: str, report: Input[Artifact], decision: Output[Artifact]) -> bool:
    """Returns True when the candidate may become champion; the reasons are in `decision`."""
    from pathlib import Path

    from slipway import steps

    result = steps.gate_candidate(steps.begin(config), run_id, Path(report.path), Path(decision.path))
    decision.metadata.update({"passed": result.passed, "reasons": result.reasons})
    return result.passed

"""The recurring drift pipeline: captured window -> Evidently drift report -> drift_detected -> retrain?"""

from kfp import dsl

from slipway.components.drift import detect_drift, export_captured_window, retrain
from slipway.pipelines.platform import configure_task, current_cluster


@dsl.pipeline(name="slipway-drift", description=__doc__)
def drift(config: dict, run_key: str = "") -> bool:
    cluster = current_cluster()  # set only by slipway.cli.compile; None under kfp.local
    window = export_captured_window(config=config).set_display_name("export-window")
    # It reads live external state (the capture store), like the registry steps: never cached.
    configure_task(window, "side_effects", cluster)
    check = detect_drift(config=config, window=window.outputs["window"]).set_display_name("detect-drift")
    configure_task(check, "cpu", cluster)
    with dsl.If(check.outputs["Output"] == True, name="drift-detected"):  # noqa: E712  (KFP condition syntax)
        submit = retrain(config=config, window=window.outputs["window"]).set_display_name("retrain")
        configure_task(submit, "side_effects", cluster)
    return check.outputs["Output"]

"""Steps of the recurring drift pipeline: export the captured window, detect drift, maybe retrain."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from slipway.config import SlipwayConfig
from slipway.errors import ConfigError

log = logging.getLogger(__name__)


def export_captured_window(cfg: SlipwayConfig, window_path: Path) -> Path:
    """Write the window as NPZ at exactly `window_path` (KFP output paths carry no extension)."""
    from slipway.monitoring.window import export_window

    written = export_window(
        cfg.monitor.data_dir, window_path.with_name(window_path.name + ".npz"), cfg.monitor.window_size
    )
    os.replace(written, window_path)
    return window_path


def check_window(cfg: SlipwayConfig, window_path: Path, report_dir: Path):
    """Evidently drift of the window against the training-time reference; the report lands in report_dir."""
    from slipway.monitoring.drift import DriftConfig, detect_drift

    drift = DriftConfig(family_alpha=cfg.monitor.family_alpha, alarm_share=cfg.monitor.alarm_share)
    return detect_drift(cfg.monitor.reference, window_path, report_dir, drift)


def retrain(cfg: SlipwayConfig) -> str:
    """Submit the retraining pipeline to Kubeflow Pipelines when configured; returns what was done."""
    if not cfg.monitor.retrain:
        log.info("drift detected; retraining is off (monitor.retrain=false)")
        return "off"
    if not cfg.monitor.kfp_host:
        raise ConfigError("monitor.retrain is true but monitor.kfp_host is not set: where should the run go?")
    from slipway.kubeflow import submit

    run = submit(cfg.monitor.retrain_pipeline, host=cfg.monitor.kfp_host, config=cfg)
    log.info("drift detected; submitted %s as run %s", cfg.monitor.retrain_pipeline, run.run_id)
    return run.run_id

"""Drift monitoring: capture KServe payload-logger events durably, compute Evidently drift, export metrics.

A domain package: imports slipway.core (and sibling domain packages); never steps, pipelines or cli.
Modules, one job each: `events` (parse CloudEvents / v2 JSON), `store` (durable segment log), `window`
(assemble a window of rows from the store), `variants` (per-version counts for A/B experiments), `features`
(drift features), `drift` (Evidently report and alarm rule), `service` (HTTP app). Heavy imports (evidently) stay inside them so `import slipway.monitoring` is cheap.
"""

from __future__ import annotations

__all__ = ["DriftConfig", "DriftResult", "detect_drift", "export_window"]

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slipway.monitoring.drift import DriftConfig, DriftResult, detect_drift
    from slipway.monitoring.window import export_window


def __getattr__(name: str) -> Any:
    """Import the public API lazily: evidently takes seconds to import and the CLI should not pay for it."""
    if name in {"DriftConfig", "DriftResult", "detect_drift"}:
        from slipway.monitoring import drift

        return getattr(drift, name)
    if name == "export_window":
        from slipway.monitoring import window

        return window.export_window
    raise AttributeError(name)

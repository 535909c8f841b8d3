"""The drift alarm rule, defined once: the `monitor:` config section and the drift computation both carry it.

`MonitorConfig` (the pipeline config) and `slipway.monitoring.drift.DriftConfig` (the monitor and the offline
report) subclass `DriftRule`, so the keys, defaults and bounds of the rule cannot drift apart.
"""

from __future__ import annotations

from pydantic import Field

from slipway.core.schema import StrictModel


class DriftRule(StrictModel):
    """When a drift window alarms: a per-window false-alarm budget and the share of columns that must drift."""

    family_alpha: float = Field(
        default=0.01,
        gt=0,
        lt=0.5,
        description="False-alarm probability per window (Bonferroni over columns).",
    )
    alarm_share: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Alarm when this share of columns drifts; None alarms on any single drifted column.",
    )

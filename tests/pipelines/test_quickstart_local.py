"""The quickstart pipeline under kfp.local when a step fails: summary.json names each step's outcome.

The successful flows (a user's model and data, a second run gated against the first, a format dropped for its
budget, a rejection) are the journeys in tests/journeys, through the CLI.
"""

import json
from pathlib import Path

from slipway.cli.local_run import run_local
from slipway.core.config import load_config
from slipway.pipelines import get_pipeline


def test_failed_step_gives_failed_summary_naming_each_steps_outcome(tmp_path: Path, fast_overrides) -> None:
    missing = tmp_path / "missing.npz"
    cfg = load_config("quickstart", [*fast_overrides, f"data.source={missing}"])
    summary = run_local(get_pipeline("quickstart"), cfg, tmp_path)
    assert summary.status == "failed"
    assert "prepare-data" in (summary.error or "")
    written = json.loads((tmp_path / "summary.json").read_text())
    assert (
        written["status"] == "failed" and written["mlflow_run_id"]
    )  # start opened the run before data failed
    outcomes = {s["step"]: s for s in written["steps"]}
    assert outcomes["start"]["status"] == "succeeded" and outcomes["start"]["outputs"]["run_id"]
    assert outcomes["data"]["status"] == "failed"
    assert "DataError" in outcomes["data"]["error"] and str(missing) in outcomes["data"]["error"]
    assert {s["status"] for name, s in outcomes.items() if name not in ("start", "data")} == {"skipped"}

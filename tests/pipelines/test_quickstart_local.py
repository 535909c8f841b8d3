"""The quickstart pipeline under kfp.local when a step fails, through `slipway run` in a subprocess: a short
console (one line per step, the failed step's last log lines and its log file), exit status 1, and a
summary.json that names each step's outcome.

The successful flows (a user's model and data, a second run gated against the first, a format dropped for its
budget, a rejection) are the journeys in tests/journeys, through the CLI.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from slipway.cli.errors import ExitCode

SLIPWAY = Path(sys.executable).with_name("slipway")


def test_failed_step_gives_a_short_console_its_log_and_a_failed_summary(
    tmp_path: Path, fast_overrides
) -> None:
    missing = tmp_path / "missing.npz"
    output = tmp_path / "run"
    sets = [arg for o in [*fast_overrides, f"data.source={missing}"] for arg in ("--set", o)]
    done = subprocess.run(
        [str(SLIPWAY), "run", "quickstart", "--output", str(output), *sets],
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "COLUMNS": "140"},
        timeout=600,
    )
    print(done.stdout, done.stderr[-4000:], sep="\n")  # shown when the test fails
    assert done.returncode == ExitCode.FAILED
    lines = done.stdout.splitlines()
    assert len(lines) <= 64 and len(done.stderr.splitlines()) <= 5  # a screen; was thousands of lines of JSON
    assert any(line.split()[:3] == ["✓", "start", "succeeded"] for line in lines)
    assert any(line.split()[:3] == ["✗", "data", "failed"] for line in lines)
    assert any(line.split()[:3] == ["-", "train-teacher", "skipped"] for line in lines)
    # the failed step's last log lines on the console, its whole output (kfp's executor lines too) in its file
    data_log = output / "logs" / "data.log"
    assert f"full log: {data_log}" in done.stdout
    assert "DataError" in done.stdout and str(missing) in done.stdout
    log = data_log.read_text()
    assert "KFP Executor" in log and "DataError" in log and "Traceback" in log
    assert "Got executor_input" in (output / "logs" / "start.log").read_text()

    written = json.loads((output / "summary.json").read_text())
    assert written["status"] == "failed" and "prepare-data" in written["error"]
    assert written["mlflow_run_id"]  # start opened the run before data failed
    outcomes = {s["step"]: s for s in written["steps"]}
    assert outcomes["start"]["status"] == "succeeded" and outcomes["start"]["outputs"]["run_id"]
    assert outcomes["start"]["duration_s"] > 0 and outcomes["start"]["log"].endswith("start.log")
    assert outcomes["data"]["status"] == "failed" and outcomes["data"]["log"] == str(data_log)
    assert "DataError" in outcomes["data"]["error"] and str(missing) in outcomes["data"]["error"]
    assert {s["status"] for name, s in outcomes.items() if name not in ("start", "data")} == {"skipped"}

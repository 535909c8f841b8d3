"""`slipway drift report` and `slipway monitor export` through click, on NPZ and CSV files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from slipway.cli.monitor import drift_group, monitor_group
from slipway.monitoring.window import Samples, save_samples

from .conftest import Split


def test_drift_report_npz(digits: Split, digits_reference: Path, tmp_path: Path) -> None:
    x = np.clip(digits.pool_x[:400] * 1.2, 0, 16)
    current = save_samples(Samples(x, probs=digits.probs(x)), tmp_path / "current.npz")
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        drift_group,
        [
            "report",
            "--reference",
            str(digits_reference),
            "--current",
            str(current),
            "-o",
            str(out),
            "--fail-on-drift",
        ],
    )
    assert result.exit_code == 6, result.output  # ExitCode.DRIFT
    assert "DRIFT:" in result.output and out.is_file()
    assert json.loads(out.with_suffix(".json").read_text())["drift_detected"] is True


def test_drift_report_csv_tabular(tabular: Split, tmp_path: Path) -> None:
    names = [f"col{i}" for i in range(10)]
    ref = save_samples(Samples(tabular.ref_x, tabular.ref_y, column_names=names), tmp_path / "ref.csv")
    cur = save_samples(Samples(tabular.pool_x[:500], column_names=names), tmp_path / "cur.csv")
    result = CliRunner().invoke(
        drift_group,
        ["report", "--reference", str(ref), "--current", str(cur), "-o", str(tmp_path / "r.html")],
    )
    assert result.exit_code == 0, result.output
    assert "no drift:" in result.output and "no `probs`" in result.output


def test_drift_report_missing_x_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, y=np.zeros(3))
    result = CliRunner().invoke(
        drift_group,
        ["report", "--reference", str(bad), "--current", str(bad), "-o", str(tmp_path / "r.html")],
    )
    assert result.exit_code == 1 and "needs an array named 'x'" in result.output


def test_monitor_group_has_serve_and_export() -> None:
    assert set(monitor_group.commands) == {"serve", "export"}
    result = CliRunner().invoke(monitor_group, ["serve", "--help"])
    assert "--max-body-bytes" in result.output and "127.0.0.1" in result.output

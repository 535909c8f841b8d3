"""Drift sliced by group (report only): files that carry `group_<name>` arrays get a drift test per group."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slipway.core.errors import DataError
from slipway.monitoring.drift import detect_drift


def _tabular(path: Path, rng: np.random.Generator, groups: np.ndarray, shift_group: str | None) -> Path:
    x = rng.normal(size=(len(groups), 4)).astype(np.float32)
    if shift_group is not None:
        x[groups == shift_group, 0] += 1.5  # only this group's first feature moves
    np.savez(path, x=x, y=np.zeros(len(groups), np.int64), group_site=groups)
    return path


def test_only_the_shifted_group_drifts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ref = _tabular(tmp_path / "ref.npz", rng, np.repeat(["a", "b"], 600), None)
    # window: 400 rows of a, 400 of b (b shifted), and 10 rows of a rare group c
    window = _tabular(tmp_path / "win.npz", rng, np.repeat(["a", "b", "c"], [400, 400, 10]), "b")
    result = detect_drift(ref, window, tmp_path / "out", {"family_alpha": 0.01})
    by_group = {s.group: s for s in result.slices}
    assert by_group["b"].drift_detected is True and by_group["b"].drifted_columns >= 1
    assert by_group["a"].drift_detected is False
    assert (by_group["a"].reference_rows, by_group["a"].current_rows) == (600, 400)
    assert by_group["c"].drift_detected is None and "fewer than min_rows" in (by_group["c"].note or "")
    written = json.loads(Path(result.json_path or "").read_text())
    assert [s["group"] for s in written["slices"]] == ["a", "b", "c"]


def test_no_group_labels_no_slices_and_mismatched_labels_are_an_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ref = _tabular(tmp_path / "ref.npz", rng, np.repeat(["a"], 200), None)
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=rng.normal(size=(100, 4)).astype(np.float32))
    assert detect_drift(ref, plain, tmp_path / "out").slices == []
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=rng.normal(size=(100, 4)).astype(np.float32), group_site=np.repeat(["a"], 99))
    with pytest.raises(DataError, match=r"group_site: 200 reference and 99 window labels"):
        detect_drift(ref, bad, tmp_path / "out")


def test_drift_report_cli_prints_the_group_slices(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from slipway.cli.monitor import drift_group

    rng = np.random.default_rng(2)
    ref = _tabular(tmp_path / "ref.npz", rng, np.repeat(["a", "b"], 300), None)
    cur = _tabular(tmp_path / "cur.npz", rng, np.repeat(["a", "b"], 200), "b")
    out = tmp_path / "r.html"
    result = CliRunner().invoke(
        drift_group, ["report", "--reference", str(ref), "--current", str(cur), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "group site=a: 200 rows, drift False" in result.output
    assert "group site=b: 200 rows, drift True" in result.output
    assert [s["group"] for s in json.loads(out.with_suffix(".json").read_text())["slices"]] == ["a", "b"]

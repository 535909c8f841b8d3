"""Group labels across step boundaries, on real files: the data step writes them into the dataset file, the
select step reads them back and writes the report's fairness section, the gate reads that report, and the record
step puts the numbers and the per-group table into a real MLflow (SQLite) run.

The whole `slipway run` on the fairness preset, in a subprocess, is the slow test at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slipway import steps
from slipway.core import data as data_lib
from slipway.core.config import load_config, to_parameter, validate_config
from slipway.registry import find_run, local_store, mlflow_client
from slipway.steps.common import EvaluationReport

TINY = [  # a model is trained, not a good one: the test follows the files, not the accuracy
    "train.epochs=2",
    "distill.epochs=2",
    "evaluate.warmup=1",
    "evaluate.latency_iterations=10",
    "evaluate.throughput_iterations=1",
    "evaluate.repeats=1",
    "export.parity_samples=32",
    "data.reference_samples=100",
    "gate.min_accuracy=0",
    "gate.max_accuracy_drop=1",
    "gate.max_latency_ms_p99=10000",
]


def test_groups_cross_from_the_data_step_to_report_gate_and_mlflow(tmp_path: Path) -> None:
    uri, artifacts = local_store(tmp_path / "store")
    cfg = load_config(
        "fairness",
        [
            *TINY,
            f"registry.tracking_uri={uri}",
            f"registry.artifact_location={artifacts}",
            "gate.max_worst_group_drop_vs_teacher=0",  # any drop on the worst group fails it
            "gate.min_worst_group_accuracy=0",  # always met
        ],
    )
    start = steps.start_run(to_parameter(cfg), "fair", {}, "quickstart")
    sliced = lambda step: validate_config(start.slices[step])  # noqa: E731  what each cached step receives
    files = {name: tmp_path / name for name in ("dataset", "reference", "teacher", "student", "report")}

    info = steps.prepare_data(sliced("data"), files["dataset"], files["reference"])
    assert info.groups == {"style": ["rotated", "upright"]}  # the dataset artifact's metadata names them
    with np.load(files["dataset"]) as written:  # the dataset artifact carries the labels beside each split
        assert {"train_group_style", "val_group_style", "test_group_style"} <= set(written.files)
        test_style = written["test_group_style"]
    with np.load(files["reference"]) as reference:
        assert reference["group_style"].shape == (100,)

    steps.train_teacher(sliced("teacher"), files["dataset"], files["teacher"])
    steps.distill_student(sliced("student"), files["dataset"], files["teacher"], files["student"])
    onnx = {role: tmp_path / f"{role}.onnx" for role in ("teacher", "student")}
    for role, path in onnx.items():
        steps.export_model(sliced("export"), files[role], files["dataset"], path)
    empty = {fmt: tmp_path / fmt for fmt in ("onnx-pruned-fp32", "onnx-int8", "onnx-fp16")}
    for path in empty.values():
        steps.mark_skipped(path, "not part of this test")
    chosen, report_path = tmp_path / "chosen.onnx", files["report"]
    steps.select_format(
        sliced("select"),
        files["dataset"],
        files["teacher"],
        onnx["teacher"],
        {"onnx-fp32": onnx["student"], **empty},
        {"onnx-fp32": files["student"]},
        chosen,
        tmp_path / "chosen.pt",
        report_path,
        tmp_path / "selection.json",
        tmp_path / "cm.png",
        served_path=tmp_path / "served.onnx",
    )
    report = EvaluationReport.model_validate_json(report_path.read_text())
    assert report.fairness is not None and report.dataset_fingerprint == info.fingerprint
    (style,) = report.fairness.features
    assert style.feature == "style"
    counts = {g.group: g.count for g in style.student.groups}
    assert counts == {
        "rotated": int((test_style == "rotated").sum()),
        "upright": int((test_style == "upright").sum()),
    }
    # the student's per-group accuracies reproduce its overall accuracy on the test split
    overall = sum(g.count * g.accuracy for g in style.student.groups) / sum(counts.values())
    assert overall == pytest.approx(report.student.accuracy)

    decision = steps.gate_candidate(
        cfg,
        start.run_id,
        report_path,
        tmp_path / "decision.json",
        dataset_path=files["dataset"],
        candidate_onnx=chosen,
    )
    by_name = {c.name: c for c in decision.checks}
    drop = style.teacher.worst_group_accuracy - style.student.worst_group_accuracy
    assert by_name["max_worst_group_drop_vs_teacher[style]"].value == pytest.approx(drop)
    assert by_name["max_worst_group_drop_vs_teacher[style]"].passed == (drop <= 0)
    assert by_name["min_worst_group_accuracy[style]"].passed

    produced = lambda path: steps.Produced(str(path), path, {})  # noqa: E731
    steps.record_run(
        cfg,
        start.run_id,
        steps.Produced(str(files["dataset"]), files["dataset"], info.model_dump()),
        {"teacher": produced(files["teacher"]), "student": produced(files["student"])},
        {},
        produced(report_path),
        produced(tmp_path / "selection.json"),
        produced(tmp_path / "cm.png"),
    )
    run = find_run(cfg.registry, "fair")
    metrics = run.data.metrics
    assert metrics["fairness.style.student.worst_group_accuracy"] == pytest.approx(
        style.student.worst_group_accuracy
    )
    assert metrics["fairness.style.teacher.group.rotated.accuracy"] == pytest.approx(
        style.teacher.group("rotated").accuracy
    )
    local = mlflow_client(cfg.registry).download_artifacts(
        start.run_id, "evaluation/fairness.csv", str(tmp_path)
    )
    table = pd.read_csv(local)
    assert set(zip(table.model, table.group, strict=True)) == {
        (m, g) for m in ("teacher", "student") for g in ("rotated", "upright")
    }
    assert (
        table.loc[(table.model == "student") & (table.group == "rotated"), "count"].item()
        == counts["rotated"]
    )


@pytest.mark.slow
def test_slipway_run_on_the_fairness_preset(tmp_path: Path, fast_overrides: list[str]) -> None:
    """The demo as a user runs it: the report, the gate's reasons and the MLflow run all have the groups."""
    sets = [arg for o in fast_overrides for arg in ("--set", o)]
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("slipway")),
            "run",
            "quickstart",
            "--config",
            "fairness",
            "--output",
            str(tmp_path / "out"),
            "--allow-reject",
            *sets,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert any("style=" in reason for reason in summary["gate"]["reasons"])
    cfg = load_config("fairness", [f"registry.tracking_uri={summary['registry']['tracking_uri']}"])
    run = mlflow_client(cfg.registry).get_run(summary["mlflow_run_id"])
    assert "fairness.style.student.worst_group_accuracy" in run.data.metrics
    report = json.loads(
        Path(
            mlflow_client(cfg.registry).download_artifacts(
                run.info.run_id, "evaluation/report.json", str(tmp_path)
            )
        ).read_text()
    )
    assert {g["group"] for g in report["fairness"]["features"][0]["student"]["groups"]} == {
        "rotated",
        "upright",
    }
    assert data_lib.BUILTIN.count("digits-groups") == 1

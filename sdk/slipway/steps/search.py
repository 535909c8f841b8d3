"""The student step with the compression search: find the smallest student within budget (or distil the fixed
one when `compress.search.enabled` is false), and write the search report, its Markdown and its plot.

`python -m slipway.steps.search --candidate KEY ...` runs one candidate alone: the trial a Katib Experiment
starts per candidate in a cluster (`slipway.cluster.katib`). It prints the objective and the other numbers as
`name=value` lines, the format of Katib's StdOut metrics collector.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from slipway.cluster.storage import download, upload
from slipway.compression import search_report
from slipway.compression.search import (
    OBJECTIVE,
    SearchReport,
    distill_candidate,
    measure_candidate,
    plan,
    run_search,
    unsearchable,
)
from slipway.core import data as data_lib
from slipway.core.artifacts import sha256_file
from slipway.core.config import SlipwayConfig, validate_config
from slipway.core.errors import ConfigError
from slipway.core.logs import setup_logging
from slipway.core.models import load_model
from slipway.steps.train import distill_student
from slipway.training.loop import TrainResult, accuracy

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SearchOutcome:
    """What the search step hands its component: the chosen student's training result and the report."""

    training: TrainResult
    report: SearchReport | None  # None: the search was off and the fixed student was distilled


def study_folder(cfg: SlipwayConfig, fingerprint: str, teacher_path: Path, fallback: Path) -> Path:
    """A stable folder per (data, teacher, search and distillation config) under `distill.checkpoint_dir`, so
    that a rerun resumes the study; without checkpoint_dir, the step's own folder (no resume)."""
    if cfg.distill.checkpoint_dir is None:
        return fallback
    key = json.dumps(
        [
            fingerprint,
            sha256_file(teacher_path),
            cfg.seed,
            cfg.student.model_dump(),
            cfg.compress.search.model_dump(exclude={"time_budget_s", "max_trials"}),
            cfg.distill.model_dump(exclude={"checkpoint_dir", "workers", "num_threads"}),
            cfg.export.opset,
        ],
        sort_keys=True,
    )
    return Path(cfg.distill.checkpoint_dir) / f"search-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def write_report(report: SearchReport, report_path: Path, markdown_path: Path, plot_path: Path) -> None:
    """The report as JSON (for machines), the plot (PNG) and Markdown with the plot inline (for people)."""
    report_path.write_text(report.model_dump_json(indent=2))
    search_report.plot(report, plot_path)
    markdown_path.write_text(search_report.markdown(report, plot_path))


def search_student(
    cfg: SlipwayConfig,
    dataset_path: Path,
    teacher_path: Path,
    model_path: Path,
    report_path: Path,
    markdown_path: Path,
    plot_path: Path,
) -> SearchOutcome:
    """The quickstart's student step: the search when enabled, else the fixed `student` distilled as before."""
    off = "compress.search.enabled is false" if not cfg.compress.search.enabled else unsearchable(cfg.student)
    if off is not None:
        if cfg.compress.search.enabled:
            log.warning("search: off, %s; distilling the fixed student", off)
        result = distill_student(cfg, dataset_path, teacher_path, model_path)
        for path in (report_path, plot_path):
            path.write_bytes(b"")
        markdown_path.write_text(
            f"# Compression search\n\nOff ({off}): the fixed student `{cfg.student.architecture}` "
            f"{cfg.student.kwargs} was distilled.\n"
        )
        return SearchOutcome(result, None)
    splits = data_lib.load_splits(dataset_path)
    teacher, _ = load_model(teacher_path)
    folder = study_folder(cfg, splits.fingerprint, teacher_path, model_path.parent / "search")
    report, chosen = run_search(
        teacher,
        (splits.x_train, splits.y_train, splits.x_val, splits.y_val),
        splits.input_shape,
        splits.num_classes,
        cfg.student,
        cfg.compress.search,
        cfg.distill,
        cfg.evaluate,
        cfg.export.opset,
        cfg.seed,
        folder,
    )
    model_path.write_bytes(chosen.read_bytes())
    write_report(report, report_path, markdown_path, plot_path)
    for line in report.reasons:
        log.info("search: %s", line)
    return SearchOutcome(TrainResult(**report.trial(report.chosen).training), report)


def search_metadata(outcome: SearchOutcome) -> dict[str, Any]:
    """What the report artifact carries (the KFP UI shows it; the record step reads it)."""
    if outcome.report is None:
        return {"search": "disabled"}
    r = outcome.report
    return {
        "chosen": r.chosen,
        "stop_reason": r.stop_reason,
        "trials": len(r.trials),
        "pareto": r.pareto,
        "seconds": r.seconds,
    }


def record_search(
    cfg: SlipwayConfig, run_id: str, report_path: Path, markdown_path: Path, plot_path: Path
) -> None:
    """Log the search's report, Markdown and plot, and its numbers, into this pipeline run's MLflow run."""
    from slipway import registry

    if report_path.stat().st_size == 0:
        registry.set_tags(cfg.registry, run_id, {"slipway.search": "disabled"})
        return
    report = SearchReport.model_validate_json(report_path.read_text())
    for path, name in ((report_path, "search.json"), (markdown_path, "search.md"), (plot_path, "search.png")):
        registry.log_artifact(cfg.registry, run_id, path, "search", name=name)
    chosen = report.trial(report.chosen)
    registry.log_metrics(
        cfg.registry,
        run_id,
        {
            "search.trials": len(report.trials),
            "search.seconds": report.seconds,
            "search.chosen_val_accuracy": chosen.val_accuracy,
            "search.chosen_drop_points": chosen.drop_points,
            "search.chosen_params": chosen.params,
        },
    )
    registry.set_tags(
        cfg.registry, run_id, {"slipway.search": {"chosen": report.chosen, "reasons": report.reasons}}
    )


# ----------------------------------------------------------------------------------------------------------
# One candidate alone: a Katib trial


def run_trial(
    config_json: str, dataset_uri: str, teacher_uri: str, candidate_key: str, output_uri: str
) -> dict[str, Any]:
    """Distil and measure one candidate (no warm start: trials run apart), upload its model, return numbers."""
    cfg = validate_config(json.loads(config_json))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        splits = data_lib.load_splits(download(dataset_uri, work / "dataset.npz"))
        teacher, _ = load_model(download(teacher_uri, work / "teacher.pt"))
        candidates = {
            c.key: c for c in plan(cfg.compress.search, cfg.student, splits.input_shape, splits.num_classes)
        }
        if candidate_key not in candidates:
            raise ConfigError(f"--candidate {candidate_key!r}: expected one of {', '.join(candidates)}")
        candidate = candidates[candidate_key]
        xy = (splits.x_train, splits.y_train, splits.x_val, splits.y_val)
        model, trained, _ = distill_candidate(
            candidate, cfg.student, teacher, xy, splits.input_shape, splits.num_classes, cfg.distill, cfg.seed,
            work / "trial",
        )  # fmt: skip
        numbers = measure_candidate(
            candidate, model, candidate.spec(cfg.student), splits.input_shape, splits.num_classes, splits.x_val,
            splits.y_val, accuracy(teacher, splits.x_val, splits.y_val), cfg.compress.search.accuracy_budget_points,
            cfg.evaluate, cfg.export.opset, work / "trial",
        )  # fmt: skip
        numbers[OBJECTIVE] = cfg.compress.search.accuracy_budget_points - numbers["drop_points"]
        numbers["training"] = dataclasses.asdict(trained)
        result = work / "trial" / "result.json"
        result.write_text(json.dumps(numbers))
        for path in (work / "trial" / "model.pt", work / "trial" / "model.onnx", result):
            upload(path, f"{output_uri.rstrip('/')}/{path.name}")
    return numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slipway.steps.search")
    parser.add_argument("--config-json", required=True)
    parser.add_argument("--dataset-uri", required=True)
    parser.add_argument("--teacher-uri", required=True)
    parser.add_argument("--candidate", required=True, help="a candidate key, e.g. w16-s2")
    parser.add_argument(
        "--output-uri", required=True, help="folder (path or URI) for model.pt, model.onnx, result.json"
    )
    ns = parser.parse_args(argv)
    setup_logging()
    numbers = run_trial(ns.config_json, ns.dataset_uri, ns.teacher_uri, ns.candidate, ns.output_uri)
    for name in (OBJECTIVE, "val_accuracy", "drop_points", "throughput_ips_b64", "size_bytes"):
        print(f"{name}={float(numbers[name])}")  # Katib's StdOut collector reads these lines
    return 0


if __name__ == "__main__":
    sys.exit(main())

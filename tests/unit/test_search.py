"""The compression search on a tiny problem where a one-channel student cannot learn and an eight-channel one
can: ordering, warm start, stopping at the first candidate within budget, skipping up when a small one misses,
the time budget, resuming a study without redoing trials, the report and the optimization plot."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from rich.console import Console

from slipway.compression import search_report
from slipway.compression.search import SearchReport, TrialResult, pareto_front, plan, run_search, warm_start
from slipway.core.config import (
    DistillConfig,
    EvaluateConfig,
    ModelSpec,
    SearchConfig,
    TrainConfig,
    load_config,
)
from slipway.core.errors import ConfigError
from slipway.core.models import build_model
from slipway.training.loop import train

SHAPE, CLASSES = (1, 32), 4
QUICK_EVAL = EvaluateConfig(warmup=1, latency_iterations=10, throughput_iterations=2, repeats=1, threads=1)
DISTILL = DistillConfig(epochs=12, patience=12, lr=0.01, batch_size=32, num_threads=1)
STUDENT = ModelSpec(architecture="student_cnn")


@pytest.fixture(scope="module")
def problem(tmp_path_factory: pytest.TempPathFactory):
    """Four classes: a positive or negative offset, times a slow or a fast (period-2) wave. A one-channel student
    sees one number after global pooling and cannot tell four classes apart; eight channels can."""
    rng = np.random.default_rng(0)
    n = 480
    y = rng.integers(0, CLASSES, n)
    t = np.arange(SHAPE[1])
    offset = np.where(y % 2 == 0, 1.0, -1.0)[:, None]
    wave = np.where((y < 2)[:, None], np.sin(2 * np.pi * t / 16)[None, :], np.cos(np.pi * t)[None, :])
    x = offset + wave + rng.normal(0, 0.2, (n, SHAPE[1]))
    x = x[:, None, :].astype(np.float32)
    xy = (x[:360], y[:360], x[360:], y[360:])
    torch.manual_seed(0)
    teacher = build_model(ModelSpec(architecture="teacher_cnn", kwargs={"width": 8}), SHAPE, CLASSES)
    cfg = TrainConfig(epochs=15, lr=0.01, batch_size=32, num_threads=1)
    train(teacher, *xy, cfg, 0, tmp_path_factory.mktemp("teacher"), label="teacher")
    return teacher, xy


def search(problem, study_dir: Path, clock=None, **overrides):
    teacher, xy = problem
    cfg = SearchConfig.model_validate({"enabled": True, "widths": [1, 8], "stages": [1], **overrides})
    kwargs = {"clock": clock} if clock else {}
    return run_search(
        teacher, xy, SHAPE, CLASSES, STUDENT, cfg, DISTILL, QUICK_EVAL, 18, 0, study_dir,
        console=Console(stderr=True, quiet=True), **kwargs,
    )  # fmt: skip


def test_candidates_run_from_small_to_large() -> None:
    cfg = SearchConfig(widths=[32, 8, 16], stages=[3, 2])
    order = plan(cfg, STUDENT, (1, 8, 8), 10)
    assert [c.macs for c in order] == sorted(c.macs for c in order)
    assert order[0].key == "w8-s2" and order[-1].key == "w32-s3" and len(order) == 6


def test_warm_start_keeps_what_the_narrower_model_computes() -> None:
    torch.manual_seed(0)
    small = build_model(ModelSpec(architecture="student_cnn", kwargs={"width": 4}), (1, 8, 8), 10)
    for m in small.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    wide = build_model(ModelSpec(architecture="student_cnn", kwargs={"width": 8}), (1, 8, 8), 10)
    copied = warm_start(wide, small)
    x = torch.randn(16, 1, 8, 8)
    assert {"0", "1", "4", "5", "9"} <= set(copied)
    torch.testing.assert_close(wide.eval()(x), small.eval()(x), rtol=1e-5, atol=1e-5)


def test_stops_at_the_first_candidate_within_budget(problem, tmp_path: Path) -> None:
    report, model = search(problem, tmp_path, widths=[8, 16], accuracy_budget_points=100)
    assert report.chosen == "w8-s1" and [t.key for t in report.trials] == ["w8-s1"]
    assert "within budget" in report.not_run["w16-s1"] and model.is_file()
    assert report.stop_reason == "found a candidate within budget"


def test_skips_to_a_larger_candidate_when_a_small_one_misses(problem, tmp_path: Path) -> None:
    report, _ = search(problem, tmp_path, accuracy_budget_points=5)
    small, big = report.trials
    assert (small.key, big.key) == ("w1-s1", "w8-s1")
    assert not small.within_budget and small.drop_points > 5
    assert big.within_budget and report.chosen == "w8-s1"
    assert big.warm_start_from == "w1-s1"  # started from the one-channel student's weights
    assert set(report.pareto) >= {"w8-s1"}
    assert report.reasons[0].startswith("chose w8-s1: the smallest candidate within budget")
    assert any(r.startswith("w1-s1: over budget") for r in report.reasons)


def test_the_time_budget_keeps_the_best_found_so_far(problem, tmp_path: Path) -> None:
    ticks = itertools.count(0, 50)  # every clock reading is 50 s later: the first trial "takes" 50 s
    report, model = search(problem, tmp_path, clock=lambda: float(next(ticks)), time_budget_s=60)
    assert [t.key for t in report.trials] == ["w1-s1"] and report.chosen == "w1-s1"
    assert report.not_run["w8-s1"].startswith("time budget 60 s")
    assert report.reasons[0].startswith("chose w1-s1: no candidate tried is within budget (time budget 60 s")
    assert model.is_file()


def test_a_resumed_study_does_not_redo_trials(problem, tmp_path: Path) -> None:
    first, _ = search(problem, tmp_path, accuracy_budget_points=5)
    again, model = search(problem, tmp_path, accuracy_budget_points=5)
    assert [t.resumed for t in again.trials] == [True, True] and again.chosen == first.chosen
    assert [t.val_accuracy for t in again.trials] == [t.val_accuracy for t in first.trials]
    study = optuna.load_study(study_name="slipway-search", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.params["candidate"] for t in study.trials] == ["w1-s1", "w8-s1"]  # no third trial
    assert [t.value for t in study.trials] == pytest.approx([5 - t.drop_points for t in first.trials])
    assert model == tmp_path / "trials" / "w8-s1" / "model.pt"


def _trial(key: str, accuracy: float, throughput: float, size: int, within: bool) -> TrialResult:
    return TrialResult(
        key=key, width=8, stages=2, params=size // 4, macs=size, size_bytes=size, val_accuracy=accuracy,
        drop_points=(0.99 - accuracy) * 100, within_budget=within, throughput_ips_b64=throughput,
        latency_ms_p99_b1=0.1, seconds=3.0,
    )  # fmt: skip


def test_pareto_front_and_a_plot_whose_labels_never_overlap(tmp_path: Path) -> None:
    # Crowded on purpose: four candidates within a few percent of each other on both axes.
    trials = [
        _trial("w8-s2", 0.950, 200_000, 8_000, False),
        _trial("w8-s3", 0.951, 196_000, 9_000, False),
        _trial("w16-s2", 0.975, 190_000, 20_000, True),
        _trial("w16-s3", 0.974, 150_000, 30_000, True),
        _trial("w32-s2", 0.985, 100_000, 60_000, True),
    ]
    assert pareto_front(trials) == ["w8-s2", "w8-s3", "w16-s2", "w32-s2"]  # w16-s3 is beaten by w16-s2
    report = SearchReport(
        teacher_val_accuracy=0.99, budget_points=2.0, time_budget_s=600, max_trials=8, trials=trials,
        not_run={}, chosen="w16-s2", stop_reason="found a candidate within budget", pareto=pareto_front(trials),
        reasons=["chose w16-s2"], seconds=15.0,
    )  # fmt: skip
    png = tmp_path / "search.png"
    labels = search_report.plot(report, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    boxes = [label.get_window_extent() for label in labels]  # type: ignore[attr-defined]
    assert len(boxes) == 5
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    text = search_report.markdown(report, png)
    assert "| 3 | **w16-s2** |" in text and "data:image/png;base64," in text


def test_search_config_is_validated_and_on_in_the_quickstart_preset() -> None:
    assert load_config("quickstart").compress.search.enabled
    with pytest.raises(ConfigError, match=r"compress\.search\.widthz"):
        load_config("quickstart", ["compress.search.widthz=[8]"])
    with pytest.raises(ConfigError, match=r"compress\.search\.widths"):
        load_config("quickstart", ["compress.search.widths=[]"])
    with pytest.raises(ConfigError, match=r"compress\.search\.time_budget_s"):
        load_config("quickstart", ["compress.search.time_budget_s=0"])

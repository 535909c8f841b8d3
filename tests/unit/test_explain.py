"""Explanations on models with a known answer, run through Captum for real: a model that reads one input
position puts its attribution there (every method, every input rank); the randomization sanity check fails for a
model whose attributions ignore its weights and passes for a trained CNN; identical teacher and student agree
perfectly, models that read different positions do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from slipway.core.config import DistillConfig, ExplainConfig, ModelSpec
from slipway.core.models import build_model
from slipway.evaluation.attribution import METHODS, attribute
from slipway.evaluation.explain import (
    ExplanationReport,
    explain,
    randomized_copy,
    rank_correlation,
    sanity_check,
    stratified_rows,
)
from slipway.training.loop import train

SHAPES = {"tabular": (12,), "signal": (2, 12), "image": (3, 8, 8)}
POSITION = {
    "tabular": (5,),
    "signal": (1, 7),
    "image": (2, 3, 5),
}  # (channel, *spatial) of the one input read


class OnePosition(nn.Module):
    """A small nonlinear net over one input value: every other position has no effect on the output."""

    def __init__(self, index: tuple[int, ...], classes: int = 3) -> None:
        super().__init__()
        self.index = index
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[(slice(None), *self.index)].reshape(-1, 1))


class WeightBlind(nn.Module):
    """Logits are a fixed function of x (a buffer, never re-initialized) times a positive scale made of the
    weights: re-initializing the weights rescales every attribution and keeps its ranking."""

    def __init__(self, features: int, classes: int = 3) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("projection", torch.randn(features, classes, generator=generator))
        self.weight = nn.Parameter(torch.randn(4, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = nn.functional.softplus(self.weight).sum()
        return (torch.tanh(x.flatten(1)) ** 2 @ self.projection) * scale


def _rows(shape: tuple[int, ...], n: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, *shape)).astype(np.float32)


@pytest.fixture(scope="module")
def trained_cnn(digits_splits) -> nn.Module:
    """A small CNN trained for a few epochs on digits (the quickstart's student architecture, narrower)."""
    s = digits_splits
    torch.manual_seed(0)
    model = build_model(
        ModelSpec(architecture="student_cnn", kwargs={"width": 8}), s.input_shape, s.num_classes
    )
    train(model, s.x_train, s.y_train, s.x_val, s.y_val, DistillConfig(epochs=4, patience=4), 0, _tmp())
    return model.eval()


def _tmp() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="explain-ckpt-"))


@pytest.mark.parametrize("kind", list(SHAPES))
@pytest.mark.parametrize("method", METHODS)
def test_a_model_that_reads_one_position_gets_all_attribution_there(kind: str, method: str) -> None:
    index = POSITION[kind]
    x = _rows(SHAPES[kind])
    a = np.abs(attribute(OnePosition(index), x, method))
    assert a.shape == x.shape and a.sum() > 0
    # occlusion's window spans the channels, so it credits the position in every channel: compare positions
    spatial = a.sum(axis=1) if len(index) > 1 else a
    assert spatial[(slice(None), *index[1:])].sum() / spatial.sum() > 0.99
    if method != "occlusion":  # gradients single out the very input value read
        assert a[(slice(None), *index)].sum() / a.sum() > 0.99


def test_sanity_check_fails_for_a_model_whose_attributions_ignore_its_weights() -> None:
    x = _rows((12,), n=32)
    model = WeightBlind(12)
    trained = {m: attribute(model, x, m) for m in METHODS}
    target = model(torch.from_numpy(x)).argmax(1).numpy()
    check = sanity_check(model, x, target, trained, threshold=0.5, steps=16, seed=0)
    assert not check.passed
    assert min(check.by_method.values()) > 0.99  # the same ranking for every method
    # the weights did change: the check failed on the maps, not on an unchanged copy
    assert not torch.equal(randomized_copy(model, 0).weight, model.weight)


def test_sanity_check_passes_for_a_trained_cnn(trained_cnn: nn.Module, digits_splits) -> None:
    x, y = digits_splits.x_test[:64], digits_splits.y_test[:64]
    trained = {m: attribute(trained_cnn, x, m, y, steps=16) for m in METHODS}
    check = sanity_check(trained_cnn, x, y, trained, threshold=0.5, steps=16, seed=0)
    assert check.passed, check
    assert check.by_method["saliency"] < 0.2  # raw gradients change entirely with the weights
    assert check.rows == 64 and check.threshold == 0.5


def test_randomized_copy_resets_every_weight_and_leaves_the_model_alone(trained_cnn: nn.Module) -> None:
    before = {k: v.clone() for k, v in trained_cnn.state_dict().items()}
    a, b = randomized_copy(trained_cnn, 3), randomized_copy(trained_cnn, 3)
    for name, p in trained_cnn.named_parameters():
        assert not torch.equal(dict(a.named_parameters())[name], p), name
        assert torch.equal(dict(a.named_parameters())[name], dict(b.named_parameters())[name])  # seeded
    assert all(torch.equal(before[k], v) for k, v in trained_cnn.state_dict().items())


def test_identical_teacher_and_student_agree_perfectly(
    trained_cnn: nn.Module, digits_splits, tmp_path: Path
) -> None:
    cfg = ExplainConfig(samples=40, methods=["saliency", "integrated_gradients"], steps=8, examples=1)
    report = explain(trained_cnn, trained_cnn, digits_splits.x_test, digits_splits.y_test, cfg, tmp_path)
    assert report.compared_method == "saliency" and report.samples == 40
    assert set(report.rank_correlation_by_class) == {str(k) for k in range(10)}
    assert all(v == pytest.approx(1.0) for v in report.rank_correlation_by_class.values())
    assert report.mean_rank_correlation == pytest.approx(1.0)
    assert report.rank_correlation_by_method["integrated_gradients"] == pytest.approx(1.0)
    assert report.sanity["teacher"] == report.sanity["student"]
    assert [e.kind for e in report.examples] == ["most_confident", "least_confident"]
    assert report.examples[0].student_confidence >= report.examples[1].student_confidence
    written = ExplanationReport.model_validate_json((tmp_path / "explanation.json").read_text())
    assert written == report
    assert sorted(report.figures) == sorted(
        f"{kind}-{m}.png" for kind in ("classes", "examples") for m in cfg.methods
    )
    with np.load(tmp_path / "class_attributions.npz") as means:
        assert means["teacher.saliency"].shape == (10, 1, 8, 8)


@pytest.mark.parametrize("kind", ["tabular", "signal"])
def test_models_that_read_different_positions_disagree(kind: str, tmp_path: Path) -> None:
    """Signals and tabular rows through the whole report (figures included): the agreement is low when the
    student reads another position than the teacher, and perfect when it reads the same one."""
    x = _rows(SHAPES[kind], n=60)
    y = np.arange(60) % 3
    other = (*POSITION[kind][:-1], POSITION[kind][-1] + 3)
    cfg = ExplainConfig(samples=60, methods=["integrated_gradients", "occlusion"], steps=8, examples=2)
    apart = explain(OnePosition(POSITION[kind]), OnePosition(other), x, y, cfg, tmp_path / "apart")
    same = explain(OnePosition(POSITION[kind]), OnePosition(POSITION[kind]), x, y, cfg, tmp_path / "same")
    assert apart.mean_rank_correlation is not None and apart.mean_rank_correlation < 0.2
    assert same.mean_rank_correlation == pytest.approx(1.0)
    for name in apart.figures:
        assert (tmp_path / "apart" / name).read_bytes()[:4] == b"\x89PNG"


def test_explanations_off_write_a_report_that_says_why(tmp_path: Path) -> None:
    model = OnePosition((5,))
    report = explain(model, model, _rows((12,)), np.zeros(16, int), ExplainConfig(enabled=False), tmp_path)
    assert not report.enabled and report.reason == "explain.enabled is false"
    assert "explain.enabled is false" in (tmp_path / "report.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explanation.json", "report.html", "report.md"]


def test_stratified_sample_and_rank_correlation_edges(digits_splits) -> None:
    y = digits_splits.y_test
    rows = stratified_rows(y, 50, seed=0)
    assert len(rows) == 50 and len(set(rows)) == 50 and set(y[rows]) == set(range(10))
    assert np.array_equal(rows, stratified_rows(y, 50, seed=0))
    assert np.array_equal(stratified_rows(y, 10_000, seed=0), np.arange(len(y)))
    assert rank_correlation(np.arange(5.0), np.arange(5.0)[::-1]) == pytest.approx(-1.0)
    assert rank_correlation(np.zeros(4), np.zeros(4)) == 1.0  # two constant maps rank alike
    assert rank_correlation(np.zeros(4), np.arange(4.0)) == 0.0  # a constant map has no ranking
    keep = np.array([True, True, True, False])
    assert rank_correlation(np.array([1.0, 2, 3, 9]), np.array([1.0, 2, 3, -9]), keep) == pytest.approx(1.0)

"""Pruning: structured pruning removes channels (params, MACs and ONNX size shrink), unstructured reports sparsity."""

from pathlib import Path

import pytest
import torch
from torch import nn

from slipway.compression.onnx_export import export_onnx
from slipway.compression.pruning import (
    classifier_layers,
    count_macs,
    prune_and_finetune,
    structured_prune,
    unstructured_prune,
    weight_sparsity,
)
from slipway.core.config import FinetuneConfig, ModelSpec, PruneConfig
from slipway.core.errors import ModelError
from slipway.core.models import build_model, count_parameters, load_model, save_model

SHAPE, CLASSES = (1, 8, 8), 10
QUICK = FinetuneConfig(epochs=1, patience=1)


def _student(arch: str = "student_cnn", **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(architecture=arch, kwargs=kwargs), SHAPE, CLASSES).eval()


def test_structured_pruning_removes_channels_and_keeps_the_classifier(tmp_path: Path) -> None:
    model = _student(width=16)
    before_params, before_macs = count_parameters(model), count_macs(model, SHAPE)
    export_onnx(model, SHAPE, tmp_path / "before.onnx")
    channels = structured_prune(model, SHAPE, CLASSES, PruneConfig(ratio=0.5))
    assert count_parameters(model) < 0.5 * before_params
    assert count_macs(model, SHAPE) < 0.5 * before_macs
    assert channels["0"] == [16, 8]
    assert model(torch.zeros(3, *SHAPE)).shape == (3, CLASSES)
    export_onnx(model, SHAPE, tmp_path / "after.onnx")
    assert (tmp_path / "after.onnx").stat().st_size < 0.6 * (tmp_path / "before.onnx").stat().st_size


def test_pruned_checkpoint_reloads_with_the_narrower_shapes(tmp_path: Path) -> None:
    model = _student("student_cnn", width=16, stages=3)
    structured_prune(model, SHAPE, CLASSES, PruneConfig(ratio=0.25, round_to=4))
    spec = ModelSpec(architecture="student_cnn", kwargs={"width": 16, "stages": 3})
    save_model(model, spec, SHAPE, CLASSES, tmp_path / "pruned.pt", pruning={"method": "structured"})
    loaded, payload = load_model(tmp_path / "pruned.pt")
    x = torch.randn(4, *SHAPE)
    assert payload["pruning"]["method"] == "structured"
    assert count_parameters(loaded) == count_parameters(model)
    assert torch.allclose(loaded(x), model(x))
    assert all(c.out_channels % 4 == 0 for c in loaded.modules() if isinstance(c, nn.Conv2d))


def test_unstructured_pruning_reports_sparsity_and_keeps_shapes() -> None:
    model = _student(width=16)
    params = count_parameters(model)
    unstructured_prune(model, 0.6)
    assert count_parameters(model) == params
    assert weight_sparsity(model) == pytest.approx(0.6, abs=0.01)


def test_prune_and_finetune_distils_and_reports(digits_splits, tmp_path: Path) -> None:
    s = digits_splits
    student, teacher = _student(width=16), _student("student_cnn", width=32)
    xy = (s.x_train[:400], s.y_train[:400], s.x_val[:100], s.y_val[:100])
    pruned, report = prune_and_finetune(
        student, teacher, xy, SHAPE, CLASSES, PruneConfig(ratio=0.5, finetune=QUICK), 0, tmp_path
    )
    assert report.params_after < report.params_before == count_parameters(student)
    assert report.macs_after < report.macs_before
    assert report.finetune_epochs == 1 and 0 <= report.val_accuracy_finetuned <= 1
    assert count_parameters(pruned) == report.params_after

    sparse, sreport = prune_and_finetune(
        student,
        None,
        xy,
        SHAPE,
        CLASSES,
        PruneConfig(method="unstructured", ratio=0.5, finetune=QUICK),
        0,
        tmp_path / "u",
    )
    assert sreport.sparsity == pytest.approx(0.5, abs=0.02)  # masks stay on during fine-tuning
    assert sreport.params_after == sreport.params_before
    assert not any(name.endswith("_orig") for name in sparse.state_dict())


def test_classifier_must_be_recognizable() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 7))
    with pytest.raises(ModelError, match="7 outputs, not 10"):
        classifier_layers(model, SHAPE, CLASSES)


# The accuracy each ratio costs, in points (the real pruning and fine-tuning run; only the score is set, so
# that every branch of the search is taken for sure): budget -> (ratios tried, the kept one, the reason's start)
COSTS = {0.75: 5.0, 0.5: 2.0, 0.25: 1.0}
SEARCHES = {
    100.0: ([0.75], "kept ratio 0.75, the largest within budget:"),
    1.5: ([0.75, 0.5, 0.25], "kept ratio 0.25, the largest within budget (0.75, 0.5 cost more):"),
    0.5: (
        [0.75, 0.5, 0.25],
        "no ratio of [0.75, 0.5, 0.25] stayed within 0.5 points: kept the smallest, 0.25",
    ),
}


@pytest.mark.parametrize("budget", SEARCHES)
def test_the_prune_step_searches_the_ratio_from_the_smallest_model_up(
    digits_splits, tmp_path: Path, budget: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """File in, file out, as the pipeline's prune step runs: ratios tried largest first, the first within
    max_drop_points kept (else the smallest), every trial and the reason in the checkpoint's pruning record;
    each ratio fine-tunes in its own checkpoint folder (a shared one resumed the wrong widths)."""
    from slipway import steps
    from slipway.core.config import SlipwayConfig
    from slipway.core.data import save_splits
    from slipway.steps import compress

    real = compress.prune_and_finetune

    def costing(*args, **kwargs):
        model, report = real(*args, **kwargs)
        cost = COSTS[args[5].ratio] / 100
        return model, report.model_copy(update={"val_accuracy_finetuned": report.val_accuracy_before - cost})

    monkeypatch.setattr(compress, "prune_and_finetune", costing)
    dataset = tmp_path / "dataset"
    save_splits(digits_splits, dataset)
    spec = ModelSpec(architecture="student_cnn", kwargs={"width": 16})
    save_model(_student(width=16), spec, SHAPE, CLASSES, tmp_path / "student.pt")
    prune = PruneConfig(ratio=0.25, ratios=[0.25, 0.75, 0.5], max_drop_points=budget, finetune=QUICK)
    cfg = SlipwayConfig()
    cfg = cfg.model_copy(update={"compress": cfg.compress.model_copy(update={"prune": prune})})

    report = steps.prune_student(cfg, dataset, tmp_path / "student.pt", None, tmp_path / "pruned.pt")

    tried, reason = SEARCHES[budget]
    assert [t.ratio for t in report.search] == tried and report.reason.startswith(reason)
    assert [t.within_budget for t in report.search] == [COSTS[r] <= budget for r in tried]
    assert [t.drop_points for t in report.search] == pytest.approx([COSTS[r] for r in tried])
    kept = report.search[-1]
    assert (report.ratio, report.params_after) == (kept.ratio, kept.params_after)
    params = [t.params_after for t in report.search]
    assert params == sorted(set(params))  # the smallest model first
    model, payload = load_model(tmp_path / "pruned.pt")
    assert count_parameters(model) == kept.params_after
    assert payload["pruning"]["search"] == [t.model_dump() for t in report.search]


def test_prune_ratios_must_be_distinct_fractions() -> None:
    assert PruneConfig(ratios=[0.25, 0.5]).ratios == [0.5, 0.25]
    for bad in ([], [1.0], [0.5, 0.5], [-0.1]):
        with pytest.raises(ValueError, match="distinct fractions"):
            PruneConfig(ratios=bad)

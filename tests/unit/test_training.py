"""Training: it learns, it stops early, it fails clearly on NaN, it resumes exactly, distillation is Hinton's."""

from pathlib import Path

import numpy as np
import pytest
import torch

from slipway.core.config import DistillConfig, ModelSpec, TrainConfig
from slipway.core.errors import TrainingError
from slipway.core.models import build_model
from slipway.training.loop import CHECKPOINT, accuracy, distillation_loss, train


def _model(seed: int = 0, architecture: str = "student_cnn"):
    torch.manual_seed(seed)
    return build_model(ModelSpec(architecture=architecture), (1, 8, 8), 10)


def _fit(s, cfg: TrainConfig, ckpt: Path, **kw):
    model = _model()
    n = 512  # a slice keeps these tests quick; the full data runs in the pipeline test
    result = train(
        model, s.x_train[:n], s.y_train[:n], s.x_val, s.y_val, cfg, seed=0, checkpoint_dir=ckpt, **kw
    )
    return model, result


def test_training_learns_digits(tmp_path: Path, digits_splits) -> None:
    model, result = _fit(digits_splits, TrainConfig(epochs=10, lr=1e-2), tmp_path)
    assert result.best_val_accuracy > 0.8
    assert accuracy(model, digits_splits.x_test, digits_splits.y_test) > 0.8
    assert len(result.history) == 10 and (tmp_path / CHECKPOINT).is_file()


def test_early_stopping_stops_after_patience(tmp_path: Path, digits_splits) -> None:
    # A tiny lr barely moves the weights, so val accuracy plateaus and patience runs out long before 50 epochs.
    _, result = _fit(digits_splits, TrainConfig(epochs=50, lr=1e-7, patience=2), tmp_path)
    assert result.stopped_early
    assert result.epochs_run == result.best_epoch + 2 < 50
    best = max(result.history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert best["epoch"] == result.best_epoch


def test_nan_loss_fails_with_a_clear_message(tmp_path: Path, digits_splits) -> None:
    s = digits_splits
    x_bad = s.x_train.copy()
    x_bad[:] = np.nan
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1, batch 1; lower the learning rate"):
        train(_model(), x_bad, s.y_train, s.x_val, s.y_val, TrainConfig(epochs=2), 0, tmp_path)


def test_interrupted_run_resumes_to_identical_metrics(tmp_path: Path, digits_splits) -> None:
    """Kill after epoch k (simulated by an exception in the epoch callback), rerun, compare with one run."""
    cfg = TrainConfig(epochs=5, lr=5e-3, patience=10)
    reference_model, reference = _fit(digits_splits, cfg, tmp_path / "once")

    class Interrupted(Exception):
        pass

    def stop_after_two(epoch: int, _metrics: dict) -> None:
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        _fit(digits_splits, cfg, tmp_path / "twice", on_epoch=stop_after_two)
    model, resumed = _fit(digits_splits, cfg, tmp_path / "twice")
    assert resumed.resumed_from_epoch == 2
    assert [h["val_accuracy"] for h in resumed.history] == [h["val_accuracy"] for h in reference.history]
    assert resumed.history[-1]["loss"] == pytest.approx(reference.history[-1]["loss"], rel=1e-5)
    x = torch.as_tensor(digits_splits.x_test[:32])
    torch.testing.assert_close(model(x), reference_model(x), rtol=1e-4, atol=1e-5)


def test_torn_checkpoint_is_ignored(tmp_path: Path, digits_splits) -> None:
    (tmp_path / CHECKPOINT).write_bytes(b"torn")
    _, result = _fit(digits_splits, TrainConfig(epochs=1), tmp_path)
    assert result.resumed_from_epoch is None and result.epochs_run == 1


def test_distillation_loss_matches_hinton() -> None:
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    temperature, alpha = 3.0, 0.6
    p_t = torch.softmax(t / temperature, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s / temperature, 1))).sum(1).mean()
    expected = alpha * temperature**2 * kl + (1 - alpha) * torch.nn.functional.cross_entropy(s, y)
    torch.testing.assert_close(distillation_loss(s, t, y, temperature, alpha), expected)
    # alpha=0 is plain cross-entropy; identical logits give zero soft loss
    torch.testing.assert_close(distillation_loss(s, t, y, 2.0, 0.0), torch.nn.functional.cross_entropy(s, y))
    assert distillation_loss(s, s, y, 2.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_keeps_the_teacher_frozen(tmp_path: Path, digits_splits) -> None:
    teacher = _model(1, "mlp")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    _, result = _fit(digits_splits, DistillConfig(epochs=2), tmp_path, teacher=teacher)
    assert not teacher.training
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, before[key])
    assert result.epochs_run == 2

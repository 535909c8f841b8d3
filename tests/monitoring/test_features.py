"""Drift features: per-channel statistics for images/signals, columns for tables, class/confidence/entropy."""

from __future__ import annotations

import numpy as np
import pytest

from slipway.core.errors import DataError
from slipway.monitoring import features as feats


def test_image_features_per_channel() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((50, 3, 8, 8), dtype=np.float32)
    frame = feats.input_features(x)
    assert list(frame.columns) == [f"c{c}_{s}" for c in range(3) for s in feats.CHANNEL_STATS]
    np.testing.assert_allclose(frame["c1_mean"], x[:, 1].reshape(50, -1).mean(axis=1), rtol=1e-5)
    brighter = feats.input_features(x * 1.2)
    assert (brighter["c0_mean"] > frame["c0_mean"]).all()
    noisy = feats.input_features(x + rng.normal(0, 0.3, x.shape).astype(np.float32))
    assert noisy["c2_grad_energy"].mean() > 2 * frame["c2_grad_energy"].mean()


def test_signal_and_tabular_features() -> None:
    sig = feats.input_features(np.zeros((4, 2, 16)))
    assert sig.shape == (4, 2 * len(feats.CHANNEL_STATS))
    tab = feats.input_features(np.arange(6).reshape(3, 2), ["a", "b"])
    assert list(tab.columns) == ["a", "b"] and tab["b"].tolist() == [1, 3, 5]
    with pytest.raises(DataError, match="shape"):
        feats.input_features(np.zeros(5))


def test_output_features_probs_logits_and_missing() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3], [np.nan] * 3])
    out = feats.output_features(probs)
    assert out[feats.PRED_CLASS].tolist()[:2] == ["0", "0"] and out[feats.PRED_CLASS].iloc[2] is None
    assert out[feats.CONFIDENCE].iloc[0] == pytest.approx(0.7)
    assert out[feats.ENTROPY].iloc[1] == pytest.approx(np.log(3))
    assert np.isnan(out[feats.ENTROPY].iloc[2])
    logits = np.array([[2.0, 0.0, -1.0]])
    assert feats.as_probabilities(logits).sum() == pytest.approx(1.0)
    assert feats.predicted_classes(probs).tolist() == [0, 0, -1]

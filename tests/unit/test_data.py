"""Data: built-in digits, user NPZ of every supported shape, deterministic splits and fingerprints."""

from pathlib import Path

import numpy as np
import pytest

from slipway.core.config import DataConfig
from slipway.core.data import load_dataset, load_splits, save_reference, save_splits
from slipway.core.errors import DataError


def test_digits_shapes_and_split_sizes(digits_splits) -> None:
    s = digits_splits
    assert s.input_shape == (1, 8, 8)
    assert s.num_classes == 10
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 1797
    assert s.x_train.dtype == np.float32 and s.x_train.min() >= 0.0 and s.x_train.max() <= 1.0


def test_split_is_stratified(digits_splits) -> None:
    train_share = np.bincount(digits_splits.y_train) / len(digits_splits.y_train)
    test_share = np.bincount(digits_splits.y_test) / len(digits_splits.y_test)
    assert np.abs(train_share - test_share).max() < 0.02


def test_split_and_fingerprint_are_deterministic(digits_splits) -> None:
    again = load_dataset(DataConfig(), seed=0)
    assert again.fingerprint == digits_splits.fingerprint
    np.testing.assert_array_equal(again.y_test, digits_splits.y_test)
    other = load_dataset(DataConfig(), seed=1)
    assert other.fingerprint != digits_splits.fingerprint


def test_splits_round_trip_through_npz(tmp_path: Path, digits_splits) -> None:
    save_splits(digits_splits, tmp_path / "d.npz")
    back = load_splits(tmp_path / "d.npz")
    assert back.fingerprint == digits_splits.fingerprint
    assert back.name == "digits"


def test_reference_sample_is_stratified_and_sized(tmp_path: Path, digits_splits) -> None:
    n = save_reference(digits_splits, tmp_path / "ref.npz", samples=200, seed=0)
    with np.load(tmp_path / "ref.npz") as ref:
        assert n == 200 and ref["x"].shape == (200, 1, 8, 8)
        assert set(np.unique(ref["y"])) == set(range(10))


@pytest.mark.parametrize("shape", [(60, 5), (60, 1, 16), (60, 3, 6, 6)])
def test_npz_shapes(tmp_path: Path, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "u.npz"
    np.savez(path, x=rng.normal(size=shape), y=np.arange(shape[0]) % 3)
    s = load_dataset(DataConfig(source=str(path)), seed=0)
    assert s.input_shape == shape[1:]
    assert s.num_classes == 3
    assert s.name == "u"


def test_npz_with_its_own_test_split(tabular_npz: Path) -> None:
    s = load_dataset(DataConfig(source=str(tabular_npz)), seed=0)
    assert len(s.y_test) == 80
    assert len(s.y_train) + len(s.y_val) == 320


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((10, 2))}, r"missing arrays \['y'\]"),
        ({"x": np.zeros((10,)), "y": np.zeros(10, int)}, "x must have shape"),
        ({"x": np.zeros((10, 2)), "y": np.zeros(9, int)}, r"y must have shape \(10,\)"),
        ({"x": np.zeros((10, 2)), "y": np.zeros(10)}, "y integer class ids"),
        ({"x": np.full((10, 2), np.nan), "y": np.zeros(10, int)}, "NaN or Inf"),
        (
            {"x": np.zeros((10, 2)), "y": np.zeros(10, int), "x_test": np.zeros((2, 2))},
            "both x_test and y_test",
        ),
    ],
)
def test_bad_npz_is_explained(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(DataConfig(source=str(path)), seed=0)


def test_missing_file_and_non_npz(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a file"):
        load_dataset(DataConfig(source=str(tmp_path / "nope.npz")), seed=0)
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        load_dataset(DataConfig(source=str(tmp_path / "junk.npz")), seed=0)


def test_max_train_samples_subsamples(digits_splits) -> None:
    s = load_dataset(DataConfig(max_train_samples=100), seed=0)
    assert len(s.y_train) == 100
    np.testing.assert_array_equal(s.y_test, digits_splits.y_test)

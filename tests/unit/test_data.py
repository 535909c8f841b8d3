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


def _with_recent(tmp_path: Path, **extra: np.ndarray) -> Path:
    """Tabular data with its own test split, plus whatever recent arrays the test gives."""
    rng = np.random.default_rng(0)
    path = tmp_path / "retrain.npz"
    arrays = {"x": rng.normal(size=(90, 4)), "y": np.arange(90) % 3}
    arrays |= {"x_test": rng.normal(size=(30, 4)), "y_test": np.arange(30) % 3, **extra}
    np.savez(path, **arrays)
    return path


def test_recent_split_is_kept_apart_and_round_trips(tmp_path: Path) -> None:
    x_recent = np.random.default_rng(1).normal(size=(12, 4))
    path = _with_recent(tmp_path, x_recent=x_recent, y_recent=np.arange(12) % 3)
    s = load_dataset(DataConfig(source=str(path)), seed=0)
    assert s.has_recent and s.x_recent is not None and s.y_recent is not None
    np.testing.assert_array_equal(s.x_recent, x_recent.astype(np.float32))
    assert s.x_recent.dtype == np.float32 and s.y_recent.dtype == np.int64
    assert len(s.y_train) + len(s.y_val) == 90 and len(s.y_test) == 30  # never trained or validated on
    assert s.split("recent")[0] is s.x_recent

    save_splits(s, tmp_path / "splits")
    back = load_splits(tmp_path / "splits")
    assert back.has_recent and back.fingerprint == s.fingerprint
    np.testing.assert_array_equal(back.y_recent, s.y_recent)
    (tmp_path / "plain").mkdir()
    without = load_dataset(DataConfig(source=str(_with_recent(tmp_path / "plain"))), seed=0)
    assert not without.has_recent and without.y_recent is None and without.name == s.name
    np.testing.assert_array_equal(without.x_train, s.x_train)  # the recent rows change no other split
    assert without.fingerprint != s.fingerprint  # but they are part of what names the dataset


def test_fingerprint_without_recent_is_unchanged(tmp_path: Path, digits_splits) -> None:
    # The fingerprint of data without a recent split, as computed before recent splits existed.
    import hashlib

    digest = hashlib.sha256(digits_splits.name.encode())
    for which in ("train", "val", "test"):
        for arr in digits_splits.split(which):
            digest.update(f"{arr.dtype}{arr.shape}".encode())
            digest.update(np.ascontiguousarray(arr).tobytes())
    assert not digits_splits.has_recent and digits_splits.x_recent is None
    assert digits_splits.fingerprint == digest.hexdigest()
    save_splits(digits_splits, tmp_path / "d.npz")
    with np.load(tmp_path / "d.npz") as npz:
        assert "x_recent" not in npz.files
    assert not load_splits(tmp_path / "d.npz").has_recent
    with pytest.raises(DataError, match="no split 'recent'"):
        digits_splits.split("recent")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"x_recent": np.zeros((4, 4))}, "give both x_recent and y_recent"),
        ({"y_recent": np.zeros(4, int)}, "give both x_recent and y_recent"),
        (
            {"x_recent": np.zeros((4, 5)), "y_recent": np.zeros(4, int)},
            r"x_recent sample shape \(5,\) differs",
        ),
        (
            {"x_recent": np.zeros((4, 4)), "y_recent": np.zeros(3, int)},
            r"\[x_recent, y_recent\]: y must have",
        ),
        (
            {"x_recent": np.full((4, 4), np.inf), "y_recent": np.zeros(4, int)},
            r"x_recent, y_recent\]: x contains",
        ),
        ({"x_recent": np.zeros((4, 4)), "y_recent": np.full(4, 7)}, "y_recent has class id 7"),
    ],
)
def test_bad_recent_split_is_explained(tmp_path: Path, extra: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(DataConfig(source=str(_with_recent(tmp_path, **extra))), seed=0)


def test_uri_source_is_downloaded_then_read(tmp_path: Path) -> None:
    from slipway.cluster.storage import download

    path = _with_recent(tmp_path, x_recent=np.zeros((6, 4)), y_recent=np.arange(6) % 3)
    uri = path.as_uri()
    assert uri.startswith("file://")
    from_uri = load_dataset(DataConfig(source=uri), seed=0, download=download)
    from_path = load_dataset(DataConfig(source=str(path)), seed=0)
    assert from_uri.name == "retrain"  # the URI's file stem
    assert from_uri.fingerprint == from_path.fingerprint and from_uri.has_recent
    with pytest.raises(DataError, match="no `download` function"):
        load_dataset(DataConfig(source=uri), seed=0)
    with pytest.raises(DataError, match="cannot read file://"):
        load_dataset(DataConfig(source=(tmp_path / "nope.npz").as_uri()), seed=0, download=download)

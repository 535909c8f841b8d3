"""Group labels through data preparation: NPZ `group_<name>` arrays, CSV sensitive-feature columns, the built-in
digits-groups generator, the splits file, and clear errors for a missing group or a length mismatch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slipway.core.config import DataConfig
from slipway.core.data import load_dataset, load_splits, save_reference, save_splits
from slipway.core.errors import DataError


def _npz(path: Path, n: int = 120, **extra: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 4)).astype(np.float32) + y[:, None]
    np.savez(path, x=x, y=y, **extra)
    return path


def test_npz_groups_follow_their_rows_into_every_split(tmp_path: Path) -> None:
    n = 120
    # the group is a function of the row (its first feature's sign), so a mis-aligned split would show
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 4)).astype(np.float32)
    region = np.where(x[:, 0] > 0, "north", "south")
    np.savez(tmp_path / "d.npz", x=x, y=y, group_region=region, group_band=(np.arange(n) % 2))
    splits = load_dataset(DataConfig(source=str(tmp_path / "d.npz")), seed=0)
    assert splits.group_names == ["band", "region"]
    for which in ("train", "val", "test"):
        xs, _ = splits.split(which)
        labels = splits.groups_of(which)["region"]
        assert labels.dtype.kind == "U" and len(labels) == len(xs)
        assert (labels == np.where(xs[:, 0] > 0, "north", "south")).all()
        assert set(splits.groups_of(which)["band"]) <= {"0", "1"}  # numbers become string labels
    again = load_splits(_saved(splits, tmp_path / "splits.npz"))
    assert again.fingerprint == splits.fingerprint
    assert (again.groups_of("test")["region"] == splits.groups_of("test")["region"]).all()


def _saved(splits, path: Path) -> Path:
    save_splits(splits, path)
    return path


def test_groups_change_the_fingerprint_but_not_the_split(tmp_path: Path) -> None:
    plain = load_dataset(DataConfig(source=str(_npz(tmp_path / "a.npz"))), seed=0)
    grouped = load_dataset(
        DataConfig(source=str(_npz(tmp_path / "b.npz", group_g=np.arange(120) % 2))), seed=0
    )
    assert (plain.x_test == grouped.x_test).all() and (plain.y_train == grouped.y_train).all()
    assert plain.groups == {} and plain.fingerprint != grouped.fingerprint


def test_sensitive_features_select_groups_and_name_a_missing_one(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", group_a=np.arange(120) % 2, group_b=np.arange(120) % 3)
    only_b = load_dataset(DataConfig(source=str(path), sensitive_features=["b"]), seed=0)
    assert only_b.group_names == ["b"]
    with pytest.raises(
        DataError, match=r"data\.sensitive_features: d has no group \['sex'\]; it has \['a', 'b'\]"
    ):
        load_dataset(DataConfig(source=str(path), sensitive_features=["sex"]), seed=0)
    with pytest.raises(DataError, match=r"digits has no group \['sex'\]; it has no group labels"):
        load_dataset(DataConfig(source="digits", sensitive_features=["sex"]), seed=0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"group_sex": np.zeros(119)}, r"\[group_sex\]: expected shape \(120,\), one group label per row"),
        ({"group_sex": np.zeros((120, 2))}, r"\[group_sex\]: expected shape \(120,\)"),
        ({"group_sex": np.full(120, np.nan)}, r"\[group_sex\]: group labels contain NaN"),
        (
            {"group_sex": np.zeros(120), "x_test": np.zeros((9, 4), np.float32), "y_test": np.arange(9) % 3},
            r"every group needs its test labels too: group arrays \['group_sex'\] but test arrays \[\]",
        ),
        ({"test_group_sex": np.zeros(9)}, r"arrays \['test_group_sex'\] but no x_test"),
    ],
)
def test_npz_group_errors_name_the_array(tmp_path: Path, extra: dict, message: str) -> None:
    path = _npz(tmp_path / "bad.npz", **extra)
    with pytest.raises(DataError, match=message):
        load_dataset(DataConfig(source=str(path)), seed=0)


def test_npz_with_its_own_test_split_takes_the_test_groups(tmp_path: Path) -> None:
    path = _npz(
        tmp_path / "d.npz",
        group_sex=np.where(np.arange(120) % 4 == 0, "f", "m"),
        x_test=np.zeros((12, 4), np.float32),
        y_test=np.arange(12) % 3,
        test_group_sex=np.array(["f"] * 12),
    )
    splits = load_dataset(DataConfig(source=str(path)), seed=0)
    assert list(splits.groups_of("test")["sex"]) == ["f"] * 12
    assert set(splits.groups_of("train")["sex"]) == {"f", "m"}


def _csv(path: Path, n: int = 90) -> Path:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "age": 20 + np.arange(n),  # unique and exact in float32: identifies the row
            "income": rng.normal(3, 1, n),
            "sex": np.where(np.arange(n) % 3 == 0, "f", "m"),
            "label": np.arange(n) % 3,
        }
    )
    frame.to_csv(path, index=False)
    return path


def test_csv_sensitive_columns_are_groups_not_features(tmp_path: Path) -> None:
    path = _csv(tmp_path / "people.csv")
    cfg = DataConfig(source=str(path), sensitive_features=["sex"], label_column="label")
    splits = load_dataset(cfg, seed=0)
    assert splits.name == "people" and splits.input_shape == (2,)  # age and income only
    frame = pd.read_csv(path)
    for which in ("train", "test"):
        xs, _ = splits.split(which)
        # each row's group is the one its (age, income) came with in the file
        lookup = dict(zip(frame["age"], frame["sex"], strict=True))
        assert [lookup[int(a)] for a in xs[:, 0]] == list(splits.groups_of(which)["sex"])


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (
            {"sensitive_features": ["race"]},
            r"no column \['race'\] \(named by \['data.sensitive_features'\]\)",
        ),
        ({"label_column": "target"}, r"no column \['target'\] \(named by \['data.label_column'\]\)"),
        ({}, r"feature columns must be numeric \(non-numeric: \['sex'\]\); name group columns"),
    ],
)
def test_csv_errors_name_the_column_and_the_key(tmp_path: Path, cfg: dict, message: str) -> None:
    path = _csv(tmp_path / "people.csv")
    with pytest.raises(DataError, match=message):
        load_dataset(DataConfig(source=str(path), **({"label_column": "label"} | cfg)), seed=0)


def test_digits_groups_is_digits_with_a_rarer_rotated_style(tmp_path: Path) -> None:
    splits = load_dataset(DataConfig(source="digits-groups", sensitive_features=["style"]), seed=0)
    style = np.concatenate([splits.groups_of(s)["style"] for s in ("train", "val", "test")])
    y = np.concatenate([splits.split(s)[1] for s in ("train", "val", "test")])
    assert len(style) == 1797 and set(style) == {"rotated", "upright"}
    share = lambda rows: float((style[rows] == "rotated").mean())  # noqa: E731
    assert 0.05 < share(~np.isin(y, (2, 5, 8))) < 0.12 < 0.28 < share(np.isin(y, (2, 5, 8))) < 0.42
    again = load_dataset(DataConfig(source="digits-groups"), seed=0)  # generated the same every time
    assert again.fingerprint == splits.fingerprint
    rows = save_reference(splits, tmp_path / "reference.npz", samples=200, seed=0)
    with np.load(tmp_path / "reference.npz") as ref:
        assert rows == 200 and ref["group_style"].shape == (200,) and set(ref["group_style"]) <= set(style)

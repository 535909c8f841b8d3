"""Datasets: built-in (digits, mnist1d, both generated offline) or user NPZ; deterministic stratified splits.

Splits travel between steps as one NPZ file, with a sha256 fingerprint that names exactly what was trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from slipway.core.config import DataConfig
from slipway.core.errors import DataError

BUILTIN = ("digits", "mnist1d")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetSplits:
    """Train/val/test arrays; x is float32 of shape (N, C, H, W), (N, C, L) or (N, F); y is int64."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max()) + 1)

    def split(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        if which not in SPLITS:
            raise DataError(f"unknown split {which!r}; expected one of {SPLITS}")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    @property
    def fingerprint(self) -> str:
        """sha256 over every array's dtype, shape and bytes, in a fixed order."""
        digest = hashlib.sha256(self.name.encode())
        for which in SPLITS:
            for arr in self.split(which):
                digest.update(f"{arr.dtype}{arr.shape}".encode())
                digest.update(np.ascontiguousarray(arr).tobytes())
        return digest.hexdigest()


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8) in [0, 1]
    return x, bunch.target.astype(np.int64)


def _mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # make_dataset generates offline; get_dataset would download, so it is never called.
    from mnist1d.data import get_dataset_args, make_dataset

    raw = make_dataset(get_dataset_args())
    as_signal = lambda a: np.asarray(a, dtype=np.float32)[:, None, :]  # noqa: E731  (N, 1, 40)
    return (
        as_signal(raw["x"]),
        np.asarray(raw["y"], dtype=np.int64),
        as_signal(raw["x_test"]),
        np.asarray(raw["y_test"], dtype=np.int64),
    )


def _check_xy(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim not in (2, 3, 4):
        raise DataError(f"{where}: x must have shape (N, F), (N, C, L) or (N, C, H, W); got {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{where}: y must have shape ({len(x)},) to match x; got {y.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: x must be numeric and y integer class ids; got {x.dtype}, {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: class ids in y must be >= 0; found {y.min()}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{where}: x contains NaN or Inf")
    return x, y.astype(np.int64)


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    if not path.is_file():
        raise DataError(f"data.source: {path} is not a file; expected {BUILTIN} or a path to an .npz")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as err:
        raise DataError(f"data.source: {path} is not a readable .npz file: {err}") from None
    missing = {"x", "y"} - arrays.keys()
    if missing:
        raise DataError(f"{path}: missing arrays {sorted(missing)}; expected x, y (optional x_test, y_test)")
    x, y = _check_xy(arrays["x"], arrays["y"], f"{path}[x, y]")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: give both x_test and y_test, or neither")
    if "x_test" in arrays:
        xt, yt = _check_xy(arrays["x_test"], arrays["y_test"], f"{path}[x_test, y_test]")
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(f"{path}: x_test sample shape {xt.shape[1:]} differs from x {x.shape[1:]}")
        return x, y, xt, yt
    return x, y, None, None


def load_dataset(cfg: DataConfig, seed: int) -> DatasetSplits:
    """Load the configured source and split it deterministically (stratified) for this seed."""
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    if cfg.source == "digits":
        x, y = _digits()
    elif cfg.source == "mnist1d":
        x, y, x_test, y_test = _mnist1d()
    else:
        x, y, x_test, y_test = _npz(Path(cfg.source))
    name = cfg.source if cfg.source in BUILTIN else Path(cfg.source).stem
    counts = np.bincount(y)
    if (counts[counts > 0] < 3).any():
        raise DataError(f"{name}: every class needs at least 3 samples for a stratified split; got {counts}")
    try:
        if x_test is None or y_test is None:
            x, x_test, y, y_test = train_test_split(
                x, y, test_size=cfg.test_fraction, stratify=y, random_state=seed
            )
        x_train, x_val, y_train, y_val = train_test_split(
            x, y, test_size=cfg.val_fraction, stratify=y, random_state=seed
        )
    except ValueError as err:
        raise DataError(f"{name}: cannot split {len(y)} samples: {err}") from None
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(y_train):
        x_train, _, y_train, _ = train_test_split(
            x_train, y_train, train_size=cfg.max_train_samples, stratify=y_train, random_state=seed
        )
    return DatasetSplits(name, x_train, y_train, x_val, y_val, x_test, y_test)


def save_splits(splits: DatasetSplits, path: str | Path) -> None:
    arrays = {f"{v}_{s}": splits.split(s)[i] for s in SPLITS for i, v in enumerate(("x", "y"))}
    with open(path, "wb") as fh:
        np.savez(fh, name=np.array(splits.name), **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds


def load_splits(path: str | Path) -> DatasetSplits:
    with np.load(path, allow_pickle=False) as npz:
        return DatasetSplits(name=str(npz["name"]), **{k: npz[k] for k in npz.files if k != "name"})


def save_reference(splits: DatasetSplits, path: str | Path, samples: int, seed: int) -> int:
    """A stratified sample of the training data, the baseline the drift monitor compares traffic with."""
    x, y = splits.x_train, splits.y_train
    if samples < len(y):
        x, _, y, _ = train_test_split(x, y, train_size=samples, stratify=y, random_state=seed)
    with open(path, "wb") as fh:
        np.savez(fh, x=x, y=y)
    return len(y)

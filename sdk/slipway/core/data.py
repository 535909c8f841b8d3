"""Datasets: built-in (digits, mnist1d, both generated offline) or user NPZ; deterministic stratified splits.

Splits travel between steps as one NPZ file, with a sha256 fingerprint that names exactly what was trained on.
A user NPZ may also hold a held-out `recent` split (labelled live traffic): carried with the splits for the
gate, never trained or validated on.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple
from urllib.parse import urlparse

import numpy as np
from sklearn.model_selection import train_test_split

from slipway.core.config import DataConfig
from slipway.core.errors import DataError

BUILTIN = ("digits", "mnist1d")
SPLITS = ("train", "val", "test")
RECENT = "recent"  # the optional held-out split of labelled live traffic, for the gate only
# (uri, local path) -> the local path; the steps pass slipway.cluster.storage.download (core cannot import it)
Download = Callable[[str, Path], Path]


def is_uri(source: str) -> bool:
    return "://" in source


@dataclass(frozen=True)
class DatasetSplits:
    """Train/val/test arrays, and an optional held-out recent split (both None when the data has none);
    x is float32 of shape (N, C, H, W), (N, C, L) or (N, F); y is int64."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_recent: np.ndarray | None = None
    y_recent: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.x_recent is None) != (self.y_recent is None):
            raise DataError(f"{self.name}: give both x_recent and y_recent, or neither")

    @property
    def has_recent(self) -> bool:
        return self.x_recent is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max()) + 1)

    def split(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """One split's (x, y); `recent` only when the data has it."""
        if which == RECENT and self.x_recent is not None and self.y_recent is not None:
            return self.x_recent, self.y_recent
        if which not in SPLITS:
            have = (*SPLITS, RECENT) if self.has_recent else SPLITS
            raise DataError(f"{self.name}: no split {which!r}; it has {have}")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    @property
    def fingerprint(self) -> str:
        """sha256 over every array's dtype, shape and bytes, in a fixed order; the recent split only when present,
        so that a dataset without one keeps the fingerprint it always had."""
        digest = hashlib.sha256(self.name.encode())
        for which in (*SPLITS, RECENT) if self.has_recent else SPLITS:
            if which == RECENT:
                digest.update(RECENT.encode())
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


class _UserArrays(NamedTuple):
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    x_recent: np.ndarray | None
    y_recent: np.ndarray | None


def _optional_pair(
    arrays: dict[str, np.ndarray], split: str, x: np.ndarray, where: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """x_<split>, y_<split>: both or neither, checked like x, y and with x's sample shape."""
    xn, yn = f"x_{split}", f"y_{split}"
    if (xn in arrays) != (yn in arrays):
        raise DataError(f"{where}: give both {xn} and {yn}, or neither")
    if xn not in arrays:
        return None, None
    xs, ys = _check_xy(arrays[xn], arrays[yn], f"{where}[{xn}, {yn}]")
    if xs.shape[1:] != x.shape[1:]:
        raise DataError(f"{where}: {xn} sample shape {xs.shape[1:]} differs from x {x.shape[1:]}")
    return xs, ys


def _npz(path: Path, where: str) -> _UserArrays:
    """Read and check a user NPZ; `where` names it in errors (its path, or the URI it came from)."""
    if not path.is_file():
        raise DataError(f"data.source: {where} is not a file; expected {BUILTIN} or a path or URI of an .npz")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as err:
        raise DataError(f"data.source: {where} is not a readable .npz file: {err}") from None
    missing = {"x", "y"} - arrays.keys()
    if missing:
        raise DataError(
            f"{where}: missing arrays {sorted(missing)}; expected x, y "
            "(optional x_test, y_test and x_recent, y_recent)"
        )
    x, y = _check_xy(arrays["x"], arrays["y"], f"{where}[x, y]")
    x_test, y_test = _optional_pair(arrays, "test", x, where)
    x_recent, y_recent = _optional_pair(arrays, RECENT, x, where)
    return _UserArrays(x, y, x_test, y_test, x_recent, y_recent)


def _user_npz(source: str, download: Download | None) -> _UserArrays:
    """A path, or a URI downloaded first (to a temporary file, read into memory, then deleted)."""
    if not is_uri(source):
        return _npz(Path(source), source)
    if download is None:
        raise DataError(
            f"data.source: {source} is a URI, and this caller gave load_dataset no `download` function "
            "(pass slipway.cluster.storage.download)"
        )
    with tempfile.TemporaryDirectory(prefix="slipway-data-") as tmp:
        return _npz(download(source, Path(tmp) / "source.npz"), source)


def source_name(source: str) -> str:
    """The dataset's name: a built-in's own, else the file stem of the path or of the URI's path."""
    if source in BUILTIN:
        return source
    return PurePosixPath(urlparse(source).path).stem if is_uri(source) else Path(source).stem


def load_dataset(cfg: DataConfig, seed: int, download: Download | None = None) -> DatasetSplits:
    """Load the configured source and split it deterministically (stratified) for this seed.

    A URI source (anything with "://") is fetched with `download` (the steps pass
    slipway.cluster.storage.download; core cannot import the cluster layer). A recent split is kept as given.
    """
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    x_recent: np.ndarray | None = None
    y_recent: np.ndarray | None = None
    if cfg.source == "digits":
        x, y = _digits()
    elif cfg.source == "mnist1d":
        x, y, x_test, y_test = _mnist1d()
    else:
        x, y, x_test, y_test, x_recent, y_recent = _user_npz(cfg.source, download)
    name = source_name(cfg.source)
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
    splits = DatasetSplits(name, x_train, y_train, x_val, y_val, x_test, y_test, x_recent, y_recent)
    if y_recent is not None and len(y_recent) and y_recent.max() >= splits.num_classes:
        raise DataError(
            f"{name}: y_recent has class id {y_recent.max()}, but x, y and the test split have only "
            f"{splits.num_classes} classes (0..{splits.num_classes - 1})"
        )
    return splits


def save_splits(splits: DatasetSplits, path: str | Path) -> None:
    """One NPZ holding every split (the recent one only when present) and the dataset's name."""
    which = (*SPLITS, RECENT) if splits.has_recent else SPLITS
    arrays = {f"{v}_{s}": splits.split(s)[i] for s in which for i, v in enumerate(("x", "y"))}
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

"""Datasets: built-in (digits, digits-groups, mnist1d, all generated offline) or a user NPZ or CSV file;
deterministic stratified splits.

Splits travel between steps as one NPZ file, with a sha256 fingerprint that names exactly what was trained on.
A user NPZ may also hold a held-out `recent` split (labelled live traffic): carried with the splits for the
gate, never trained or validated on. Group labels (sensitive features, for the fairness report) travel beside
each split: NPZ arrays `group_<name>` (`test_group_<name>`, `recent_group_<name>` for those splits), or the CSV
columns named in `data.sensitive_features`.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple
from urllib.parse import urlparse

import numpy as np

from slipway.core.config import DataConfig
from slipway.core.errors import DataError

BUILTIN = ("digits", "digits-groups", "mnist1d")
SPLITS = ("train", "val", "test")
RECENT = "recent"  # the optional held-out split of labelled live traffic, for the gate only
GROUP_PREFIX = "group_"  # a user NPZ: group_<name> beside x; <split>_group_<name> beside x_<split>
SPLIT_GROUP = "_group_"  # the splits file: <split>_group_<name> beside x_<split>
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
    # split -> group name -> one label (a string) per row of that split; empty when the data has no groups
    groups: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.x_recent is None) != (self.y_recent is None):
            raise DataError(f"{self.name}: give both x_recent and y_recent, or neither")
        if not self.groups:
            return
        names = sorted(self.groups.get("test", {}))
        for which in (*SPLITS, RECENT) if self.has_recent else SPLITS:
            given = self.groups.get(which)
            if given is None and which == RECENT:
                continue  # a recent split may come without group labels
            if given is None or sorted(given) != names:
                have = sorted(given) if given else []
                raise DataError(f"{self.name}: the {which} split has groups {have}, the test split {names}")
            rows = len(self.split(which)[1])
            for group, labels in given.items():
                if labels.shape != (rows,):
                    raise DataError(
                        f"{self.name}: group {group!r} of the {which} split has shape {labels.shape}; "
                        f"expected ({rows},), one label per row"
                    )
        unknown = set(self.groups) - {*SPLITS, RECENT}
        if unknown:
            raise DataError(f"{self.name}: group labels for unknown splits {sorted(unknown)}")

    @property
    def group_names(self) -> list[str]:
        """The sensitive features the data carries (empty: no group labels)."""
        return sorted(self.groups.get("test", {}))

    def groups_of(self, which: str) -> dict[str, np.ndarray]:
        """Group name -> labels for one split's rows (empty when the data or that split has none)."""
        return dict(self.groups.get(which, {}))

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
        for which, named in sorted(self.groups.items()):  # only when present: old fingerprints stay valid
            for group, labels in sorted(named.items()):
                digest.update(f"{which}{SPLIT_GROUP}{group}{labels.dtype}{labels.shape}".encode())
                digest.update(np.ascontiguousarray(labels).tobytes())
        return digest.hexdigest()


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8) in [0, 1]
    return x, bunch.target.astype(np.int64)


# digits-groups: which classes the minority style is drawn for more often, and how often (see docs/fairness.md)
ROTATED_CLASSES = (2, 5, 8)
ROTATED_SHARE = {"listed": 0.35, "other": 0.08}
ROTATED_NOISE = 0.15
GROUPS_SEED = 20200113  # fixed: the built-in data is the same on every machine, whatever the run's seed


def _digits_groups() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """digits with a `style` group: a minority of images is rotated by 90 degrees and noisier ("rotated"), the
    rest are as scanned ("upright"). The minority is drawn more often for classes 2, 5 and 8 (35%) than for the
    others (8%), so the group correlates with the label, and it is a harder, rarer sub-distribution: what a
    compressed model is known to lose first (Hooker et al. 2020)."""
    x, y = _digits()
    rng = np.random.default_rng(GROUPS_SEED)
    share = np.where(np.isin(y, ROTATED_CLASSES), ROTATED_SHARE["listed"], ROTATED_SHARE["other"])
    rotated = rng.random(len(y)) < share
    x = x.copy()
    turned = np.rot90(x[rotated], k=1, axes=(2, 3)) + rng.normal(0, ROTATED_NOISE, x[rotated].shape)
    x[rotated] = np.clip(turned, 0.0, 1.0).astype(np.float32)
    return x, y, {"style": np.where(rotated, "rotated", "upright")}


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


def _group_labels(labels: np.ndarray, rows: int, where: str) -> np.ndarray:
    """One group label per row, as strings (the report's keys); numbers, booleans and strings are accepted."""
    if labels.ndim != 1 or len(labels) != rows:
        raise DataError(f"{where}: expected shape ({rows},), one group label per row; got {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.number) or labels.dtype.kind in "bUS"):
        raise DataError(f"{where}: group labels must be numbers, booleans or strings; got {labels.dtype}")
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise DataError(f"{where}: group labels contain NaN or Inf")
    return labels.astype(str)


class _UserArrays(NamedTuple):
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    x_recent: np.ndarray | None
    y_recent: np.ndarray | None
    # "all" (beside x), "test", "recent" -> group name -> labels
    groups: dict[str, dict[str, np.ndarray]] = {}


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


def _npz_groups(
    arrays: dict[str, np.ndarray], rows: dict[str, int], where: str
) -> dict[str, dict[str, np.ndarray]]:
    """group_<name> beside x, and <split>_group_<name> beside each x_<split> the file holds: a split cut from x
    takes its labels from group_<name>, a given test split must bring its own."""
    prefixes = {"all": GROUP_PREFIX, "test": f"test{SPLIT_GROUP}", RECENT: f"{RECENT}{SPLIT_GROUP}"}
    found: dict[str, dict[str, np.ndarray]] = {}
    for split, prefix in prefixes.items():
        named = {
            k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix) and len(k) > len(prefix)
        }
        if named and split not in rows:
            raise DataError(f"{where}: arrays {sorted(prefix + n for n in named)} but no x_{split}")
        found[split] = {n: _group_labels(v, rows[split], f"{where}[{prefix}{n}]") for n, v in named.items()}
    names = sorted(found["all"])
    if "test" in rows and sorted(found["test"]) != names:
        raise DataError(
            f"{where}: the file holds x_test, so every group needs its test labels too: group arrays "
            f"{[GROUP_PREFIX + n for n in names]} but test arrays {[f'test{SPLIT_GROUP}{n}' for n in found['test']]}"
        )
    if found[RECENT] and sorted(found[RECENT]) != names:
        raise DataError(
            f"{where}: recent group arrays {sorted(found[RECENT])} do not match the groups {names} of x"
        )
    return {split: named for split, named in found.items() if named}


def _npz(path: Path, where: str) -> _UserArrays:
    """Read and check a user NPZ; `where` names it in errors (its path, or the URI it came from)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as err:
        raise DataError(f"data.source: {where} is not a readable .npz file: {err}") from None
    missing = {"x", "y"} - arrays.keys()
    if missing:
        raise DataError(
            f"{where}: missing arrays {sorted(missing)}; expected x, y "
            "(optional x_test, y_test and x_recent, y_recent; group_<name> for group labels)"
        )
    x, y = _check_xy(arrays["x"], arrays["y"], f"{where}[x, y]")
    x_test, y_test = _optional_pair(arrays, "test", x, where)
    x_recent, y_recent = _optional_pair(arrays, RECENT, x, where)
    rows = {"all": len(y)} | ({"test": len(y_test)} if y_test is not None else {})
    rows |= {RECENT: len(y_recent)} if y_recent is not None else {}
    return _UserArrays(x, y, x_test, y_test, x_recent, y_recent, _npz_groups(arrays, rows, where))


def _csv(path: Path, where: str, cfg: DataConfig) -> _UserArrays:
    """A tabular CSV: the label column, the sensitive-feature columns (group labels, never features) and
    numeric feature columns (all the others)."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise DataError(f"data.source: {where} is not a readable CSV file: {err}") from None
    wanted = [cfg.label_column, *cfg.sensitive_features]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        keys = ["data.label_column" if c == cfg.label_column else "data.sensitive_features" for c in missing]
        raise DataError(
            f"{where}: no column {missing} (named by {sorted(set(keys))}); its columns are {list(frame.columns)}"
        )
    features = [c for c in frame.columns if c not in wanted]
    bad = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if not features or bad:
        raise DataError(
            f"{where}: feature columns must be numeric (non-numeric: {bad[:5]}); name group columns in "
            "data.sensitive_features and encode other categories as numbers"
        )
    labels = frame[cfg.label_column]
    if not pd.api.types.is_integer_dtype(labels):
        raise DataError(
            f"{where}: column {cfg.label_column!r} must hold integer class ids; got {labels.dtype}"
        )
    x, y = _check_xy(frame[features].to_numpy(), labels.to_numpy(), where)
    empty = [c for c in cfg.sensitive_features if frame[c].isna().any()]
    if empty:
        raise DataError(f"{where}: group columns {empty} have empty cells; every row needs its group label")
    groups = {
        c: _group_labels(frame[c].astype(str).to_numpy(str), len(y), f"{where}[{c}]")
        for c in cfg.sensitive_features
    }
    return _UserArrays(x, y, None, None, None, None, {"all": groups} if groups else {})


def _read_user_file(path: Path, where: str, cfg: DataConfig) -> _UserArrays:
    if not path.is_file():
        raise DataError(
            f"data.source: {where} is not a file; expected {BUILTIN} or a path or URI of an .npz or .csv"
        )
    return _csv(path, where, cfg) if where.lower().endswith(".csv") else _npz(path, where)


def _user_file(cfg: DataConfig, download: Download | None) -> _UserArrays:
    """A path, or a URI downloaded first (to a temporary file, read into memory, then deleted)."""
    source = cfg.source
    if not is_uri(source):
        return _read_user_file(Path(source), source, cfg)
    if download is None:
        raise DataError(
            f"data.source: {source} is a URI, and this caller gave load_dataset no `download` function "
            "(pass slipway.cluster.storage.download)"
        )
    suffix = PurePosixPath(urlparse(source).path).suffix or ".npz"
    with tempfile.TemporaryDirectory(prefix="slipway-data-") as tmp:
        return _read_user_file(download(source, Path(tmp) / f"source{suffix}"), source, cfg)


def _only_named(
    groups: dict[str, dict[str, np.ndarray]], wanted: list[str], name: str
) -> dict[str, dict[str, np.ndarray]]:
    """The groups named in data.sensitive_features (all the data has when it names none)."""
    have = sorted(groups.get("all", {}))
    missing = [g for g in wanted if g not in have]
    if missing:
        raise DataError(
            f"data.sensitive_features: {name} has no group {missing}; it has {have or 'no group labels'} "
            f"(NPZ arrays {GROUP_PREFIX}<name>, CSV columns)"
        )
    if not wanted:
        return groups
    return {split: {g: named[g] for g in wanted} for split, named in groups.items()}


def _stratified(
    x: np.ndarray, y: np.ndarray, g: list[np.ndarray], seed: int, **size: Any
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Stratified split of x, y and the group labels with them: ([x, y, *g] first part, [...] second part).
    The extra arrays do not change which rows go where."""
    from sklearn.model_selection import train_test_split  # 1.6 s to import: only the data step splits

    parts = train_test_split(x, y, *g, stratify=y, random_state=seed, **size)
    return parts[0::2], parts[1::2]


def source_name(source: str) -> str:
    """The dataset's name: a built-in's own, else the file stem of the path or of the URI's path."""
    if source in BUILTIN:
        return source
    return PurePosixPath(urlparse(source).path).stem if is_uri(source) else Path(source).stem


def load_dataset(cfg: DataConfig, seed: int, download: Download | None = None) -> DatasetSplits:
    """Load the configured source and split it deterministically (stratified) for this seed.

    A URI source (anything with "://") is fetched with `download` (the steps pass
    slipway.cluster.storage.download; core cannot import the cluster layer). A recent split is kept as given.
    Group labels are cut with their rows, so adding them leaves the splits (and fingerprint of x, y) as they were.
    """
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    x_recent: np.ndarray | None = None
    y_recent: np.ndarray | None = None
    groups: dict[str, dict[str, np.ndarray]] = {}
    if cfg.source == "digits":
        x, y = _digits()
    elif cfg.source == "digits-groups":
        x, y, style = _digits_groups()
        groups = {"all": style}
    elif cfg.source == "mnist1d":
        x, y, x_test, y_test = _mnist1d()
    else:
        x, y, x_test, y_test, x_recent, y_recent, groups = _user_file(cfg, download)
    name = source_name(cfg.source)
    groups = _only_named(groups, cfg.sensitive_features, name)
    names = sorted(groups.get("all", {}))
    g = [groups["all"][n] for n in names]
    counts = np.bincount(y)
    if (counts[counts > 0] < 3).any():
        raise DataError(f"{name}: every class needs at least 3 samples for a stratified split; got {counts}")

    try:
        if x_test is None or y_test is None:
            (x, y, *g), (x_test, y_test, *g_test) = _stratified(x, y, g, seed, test_size=cfg.test_fraction)
        else:
            g_test = [groups["test"][n] for n in names]
        (x_train, y_train, *g_train), (x_val, y_val, *g_val) = _stratified(
            x, y, g, seed, test_size=cfg.val_fraction
        )
    except ValueError as err:
        raise DataError(f"{name}: cannot split {len(y)} samples: {err}") from None
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(y_train):
        (x_train, y_train, *g_train), _ = _stratified(
            x_train, y_train, g_train, seed, train_size=cfg.max_train_samples
        )
    by_split = {"train": g_train, "val": g_val, "test": g_test}
    split_groups = {s: dict(zip(names, arrs, strict=True)) for s, arrs in by_split.items()} if names else {}
    if RECENT in groups:
        split_groups[RECENT] = groups[RECENT]
    splits = DatasetSplits(
        name, x_train, y_train, x_val, y_val, x_test, y_test, x_recent, y_recent, split_groups
    )
    if y_recent is not None and len(y_recent) and y_recent.max() >= splits.num_classes:
        raise DataError(
            f"{name}: y_recent has class id {y_recent.max()}, but x, y and the test split have only "
            f"{splits.num_classes} classes (0..{splits.num_classes - 1})"
        )
    return splits


def save_splits(splits: DatasetSplits, path: str | Path) -> None:
    """One NPZ holding every split (the recent one only when present), their group labels (<split>_group_<name>)
    and the dataset's name."""
    which = (*SPLITS, RECENT) if splits.has_recent else SPLITS
    arrays = {f"{v}_{s}": splits.split(s)[i] for s in which for i, v in enumerate(("x", "y"))}
    arrays |= {
        f"{s}{SPLIT_GROUP}{g}": labels for s, named in splits.groups.items() for g, labels in named.items()
    }
    with open(path, "wb") as fh:
        np.savez(fh, name=np.array(splits.name), **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds


def load_splits(path: str | Path) -> DatasetSplits:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "name"}
        name = str(npz["name"])
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key in [k for k in arrays if SPLIT_GROUP in k]:
        split, _, group = key.partition(SPLIT_GROUP)
        groups.setdefault(split, {})[group] = arrays.pop(key)
    return DatasetSplits(name=name, groups=groups, **arrays)


def save_reference(splits: DatasetSplits, path: str | Path, samples: int, seed: int) -> int:
    """A stratified sample of the training data, the baseline the drift monitor compares traffic with; with
    the training rows' group labels (group_<name>) when the data has them, so drift can be sliced by group."""
    x, y = splits.x_train, splits.y_train
    g = [splits.groups_of("train")[n] for n in splits.group_names]
    if samples < len(y):
        (x, y, *g), _ = _stratified(x, y, g, seed, train_size=samples)
    with open(path, "wb") as fh:
        groups = {f"{GROUP_PREFIX}{n}": a for n, a in zip(splits.group_names, g, strict=True)}
        np.savez(fh, x=x, y=y, **groups)  # type: ignore[arg-type]  # numpy stubs: **kwds
    return len(y)

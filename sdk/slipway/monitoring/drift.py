"""Windowed drift of current traffic against the reference sample, computed with Evidently 0.7.

Alarm rule (see docs/monitoring.md): every drift feature gets one p-value test (K-S for numbers, chi-square
for the predicted class). With m columns, each column's test uses the Bonferroni threshold
`family_alpha / m`, so the chance that a window drawn from the reference distribution raises any alarm is at
most `family_alpha` (default 0.01, i.e. about one false alarm per 100 windows). By default the window alarms
as soon as ONE column drifts (Evidently's default share of 0.5 would miss a shift of a single feature);
`alarm_share` switches to "alarm when at least this share of columns drift". The decision is read from
Evidently's own tests (`include_tests=True`): the DriftedColumnsCount share test fails exactly when the rule
fires.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from slipway.core.drift_rule import DriftRule
from slipway.core.errors import DataError, DriftError
from slipway.monitoring import features as feats

logger = logging.getLogger(__name__)

NumMethod = Literal["ks_asymp", "ks", "t_test", "mannw", "anderson", "cramer_von_mises", "epps_singleton"]
CatMethod = Literal["chi2_two_sample", "chisquare", "z", "fisher_exact", "g_test"]
LABEL_COLUMN = "label"
TWO_SAMPLE_CHI2 = "chi2_two_sample"
KS_ASYMP = "ks_asymp"
_registered = False


def _register_stattests() -> None:
    """Register two p-value tests with Evidently's stat-test registry (used through `Report` like built-ins).

    `ks_asymp`: the two-sample Kolmogorov-Smirnov test with scipy's asymptotic p-value. Evidently's "ks"
    lets scipy pick the exact distribution up to 10,000 rows, which took 0.22 s per column on a 10,000-row
    window (22 s for 24 columns, measured); the asymptotic p-value is accurate at window sizes >= a few
    hundred and costs milliseconds.

    `chi2_two_sample`: a two-sample chi-square test of homogeneity.

    Evidently's own "chisquare" is a goodness-of-fit test that treats the reference proportions as exact; with
    a reference only a few times larger than the window it ignores the reference's own sampling noise and
    alarms far more often than its threshold says (measured: 2 of 20 null digit windows at p < 0.01/10).
    scipy's contingency-table test compares two samples, which is what a window against a reference is.
    """
    global _registered
    if _registered:
        return
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType
    from scipy.stats import chi2_contingency, ks_2samp

    def _ks_asymp(
        reference_data: pd.Series, current_data: pd.Series, feature_type: Any, threshold: float
    ) -> tuple[float, bool]:
        ref = reference_data.dropna().to_numpy(np.float64)
        cur = current_data.dropna().to_numpy(np.float64)
        if len(ref) == 0 or len(cur) == 0:
            return 1.0, False
        p_value = float(ks_2samp(ref, cur, method="asymp").pvalue)
        return p_value, p_value < threshold

    def _chi2_two_sample(
        reference_data: pd.Series, current_data: pd.Series, feature_type: Any, threshold: float
    ) -> tuple[float, bool]:
        ref_counts = reference_data.dropna().astype(str).value_counts()
        cur_counts = current_data.dropna().astype(str).value_counts()
        keys = sorted(set(ref_counts.index) | set(cur_counts.index))
        if len(keys) < 2 or ref_counts.sum() == 0 or cur_counts.sum() == 0:
            return 1.0, False
        table = np.array([[ref_counts.get(k, 0) for k in keys], [cur_counts.get(k, 0) for k in keys]])
        p_value = float(chi2_contingency(table, correction=False)[1])
        return p_value, p_value < threshold

    register_stattest(
        StatTest(
            name=KS_ASYMP,
            display_name="K-S (asymptotic) p_value",
            allowed_feature_types=[ColumnType.Numerical],
        ),
        default_impl=_ks_asymp,
    )
    register_stattest(
        StatTest(
            name=TWO_SAMPLE_CHI2,
            display_name="two-sample chi-square p_value",
            allowed_feature_types=[ColumnType.Categorical],
        ),
        default_impl=_chi2_two_sample,
    )
    _registered = True


class DriftConfig(DriftRule):
    """How drift is tested and when it alarms (the rule's keys come from DriftRule); a wrong key names itself."""

    model_config = ConfigDict(frozen=True)

    num_method: NumMethod = "ks_asymp"
    cat_method: CatMethod = "chi2_two_sample"
    min_rows: int = Field(
        default=30, ge=2, description="Fewer current rows than this is an error, not a verdict."
    )
    min_labels: int = Field(
        default=30, ge=1, description="Labelled rows needed for target drift and accuracy."
    )
    write_html: bool = True

    @classmethod
    def from_rule(cls, rule: DriftRule) -> DriftConfig:
        """The drift settings for an alarm rule configured elsewhere (the pipeline's `monitor:` section)."""
        return cls(**rule.model_dump(include=set(DriftRule.model_fields)))


class ColumnDrift(BaseModel):
    """One column's drift test: `score` is Evidently's drift score (a p-value: smaller means more drift)."""

    name: str
    role: Literal["input", "output", "target"]
    method: str
    score: float
    threshold: float
    drifted: bool


class GroupDrift(BaseModel):
    """The drift test on one group's rows only (report only: the window's verdict stays the whole window's)."""

    feature: str
    group: str
    reference_rows: int
    current_rows: int
    drifted_columns: int | None = None  # None: too few rows in this group to test
    share_of_drifted_columns: float | None = None
    drift_detected: bool | None = None
    accuracy: float | None = None
    note: str | None = None


class DriftResult(BaseModel):
    """What the monitor, the CLI and the pipeline step need from one drift run."""

    report_id: str
    created_at: str
    reference_rows: int
    current_rows: int
    columns: list[ColumnDrift]
    drifted_columns: int
    share_of_drifted_columns: float
    drift_detected: bool
    data_drift_detected: bool
    target_drift_detected: bool
    alarm_rule: str
    failed_tests: list[str]
    target: ColumnDrift | None = None
    labelled_rows: int = 0
    accuracy: float | None = None
    reference_accuracy: float | None = None
    notes: list[str] = []
    seconds: float = 0.0
    html_path: str | None = None
    json_path: str | None = None
    slices: list[GroupDrift] = []  # by group, when both files carry group labels: reported, never alarms


@dataclass
class FeatureSet:
    """Drift features of one sample set plus what target drift and accuracy need."""

    frame: pd.DataFrame
    numerical: list[str]
    categorical: list[str]
    labels: np.ndarray | None = None  # int64, -1 where unknown
    predictions: np.ndarray | None = None  # int64, -1 where no response was seen
    has_outputs: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.frame)


def build_features(
    x: np.ndarray,
    probs: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    column_names: list[str] | None = None,
) -> FeatureSet:
    """Compute the drift features of a sample set once, so many windows can be compared against it cheaply."""
    frame = feats.input_features(x, column_names)
    numerical = list(frame.columns)
    categorical: list[str] = []
    predictions = None
    has_outputs = False
    if probs is not None and len(probs):
        if len(probs) != len(frame):
            raise DataError(f"probs: {len(probs)} rows for {len(frame)} inputs")
        out = feats.output_features(probs)
        if out[feats.CONFIDENCE].notna().any():
            frame = pd.concat([frame, out], axis=1)
            numerical += [c for c in feats.OUTPUT_COLUMNS if c not in feats.CATEGORICAL_OUTPUT_COLUMNS]
            categorical += list(feats.CATEGORICAL_OUTPUT_COLUMNS)
            predictions = feats.predicted_classes(probs)
            has_outputs = True
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) != len(frame):
            raise DataError(f"y: {len(labels)} labels for {len(frame)} inputs")
    return FeatureSet(frame, numerical, categorical, labels, predictions, has_outputs)


def _evidently_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    config: DriftConfig,
    threshold: float,
    drift_share: float,
) -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    _register_stattests()
    # The metrics DataDriftPreset generates, without the preset's legacy table widget, which was computed on
    # every run even when no HTML is written (2-3x slower per window, measured).
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    columns = numerical + categorical
    metrics: list[Any] = [
        DriftedColumnsCount(
            columns=columns,
            num_method=config.num_method,
            cat_method=config.cat_method,
            threshold=threshold,
            drift_share=drift_share,
        )
    ]
    metrics += [
        ValueDrift(
            column=c,
            method=config.cat_method if c in categorical else config.num_method,
            threshold=threshold,
        )
        for c in columns
    ]
    report = Report(metrics, include_tests=True)
    try:
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            # Evidently correlates columns for its widgets; constant columns (a digit's min pixel) warn there.
            warnings.simplefilter("ignore", RuntimeWarning)
            return report.run(
                Dataset.from_pandas(current, data_definition=definition),
                Dataset.from_pandas(reference, data_definition=definition),
            )
    except (ValueError, TypeError, KeyError, ZeroDivisionError) as exc:
        raise DriftError(f"Evidently could not compute drift: {exc}") from exc


def _parse_snapshot(
    snapshot: Any, roles: dict[str, Literal["input", "output", "target"]]
) -> tuple[list[ColumnDrift], float, int, bool, list[str]]:
    """Read per-column scores from the metrics and the verdicts from the tests of an Evidently snapshot."""
    data = snapshot.dict()
    scores: dict[str, tuple[str, float, float]] = {}
    metric_column: dict[str, str] = {}
    share, count = 0.0, 0
    for metric in data["metrics"]:
        cfg = metric["config"]
        if cfg.get("type", "").endswith("ValueDrift"):
            scores[cfg["column"]] = (str(cfg["method"]), float(metric["value"]), float(cfg["threshold"]))
            metric_column[metric["id"]] = cfg["column"]
        elif cfg.get("type", "").endswith("DriftedColumnsCount"):
            share, count = float(metric["value"]["share"]), int(metric["value"]["count"])
    drifted: dict[str, bool] = {}
    share_failed = False
    failed: list[str] = []
    for test in data["tests"]:
        status = str(getattr(test["status"], "value", test["status"]))
        params = test["metric_config"]["params"]
        if status in {"FAIL", "ERROR"}:
            failed.append(test["name"])
        if params.get("type", "").endswith("ValueDrift"):
            drifted[params["column"]] = status == "FAIL"
        elif params.get("type", "").endswith("DriftedColumnsCount"):
            share_failed = status == "FAIL"
        if status == "ERROR":
            raise DriftError(f"Evidently test '{test['name']}' errored: {test.get('description', '')}")
    columns = [
        ColumnDrift(
            name=name,
            role=roles.get(name, "input"),
            method=method,
            score=score if math.isfinite(score) else 1.0,
            threshold=threshold,
            drifted=drifted.get(name, score < threshold),
        )
        for name, (method, score, threshold) in scores.items()
    ]
    return columns, share, count, share_failed, failed


def _new_report_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def compute_drift(
    reference: FeatureSet,
    current: FeatureSet,
    config: DriftConfig | None = None,
    output_dir: Path | None = None,
    report_id: str | None = None,
) -> DriftResult:
    """Compare a current window with the reference; write `<id>.html` and `<id>.json` when `output_dir` is set."""
    config = config or DriftConfig()
    started = time.perf_counter()
    if current.rows < config.min_rows:
        raise DataError(f"current window: {current.rows} rows, need at least min_rows={config.min_rows}")
    notes = list(current.notes)
    numerical = [
        c for c in reference.numerical if c in current.frame.columns and c not in feats.OUTPUT_COLUMNS
    ]
    categorical: list[str] = []
    roles: dict[str, Literal["input", "output", "target"]] = {c: "input" for c in numerical}
    if reference.has_outputs and current.has_outputs:
        for c in feats.OUTPUT_COLUMNS:
            (categorical if c in feats.CATEGORICAL_OUTPUT_COLUMNS else numerical).append(c)
            roles[c] = "output"
    elif not reference.has_outputs:
        notes.append("reference has no `probs`: output features (class, confidence, entropy) not compared")
    else:
        notes.append("current window has no model responses: output features not compared")
    missing = [
        c for c in reference.numerical if c not in current.frame.columns and c not in feats.OUTPUT_COLUMNS
    ]
    if missing:
        raise DataError(
            f"current window lacks feature columns {missing[:5]}: inputs differ from the reference"
        )
    n_columns = len(numerical) + len(categorical)
    threshold = config.family_alpha / n_columns
    # Evidently's share test passes while share < drift_share: half a column's share makes one column fail it.
    drift_share = config.alarm_share if config.alarm_share is not None else 0.5 / n_columns
    cols = numerical + categorical
    snapshot = _evidently_report(
        reference.frame[cols], current.frame[cols], numerical, categorical, config, threshold, drift_share
    )
    columns, share, count, share_failed, failed = _parse_snapshot(snapshot, roles)
    target, labelled, accuracy, ref_accuracy = _target_and_accuracy(reference, current, config, notes)
    target_drift = bool(target and target.drifted)
    rule = (
        f"alarm when any of {n_columns} columns has p < {config.family_alpha}/{n_columns} = {threshold:.2e}"
        if config.alarm_share is None
        else f"alarm when share of columns with p < {threshold:.2e} is >= {config.alarm_share}"
    )
    result = DriftResult(
        report_id=report_id or _new_report_id(),
        created_at=datetime.now(UTC).isoformat(),
        reference_rows=reference.rows,
        current_rows=current.rows,
        columns=columns,
        drifted_columns=count,
        share_of_drifted_columns=share,
        drift_detected=share_failed or target_drift,
        data_drift_detected=share_failed,
        target_drift_detected=target_drift,
        alarm_rule=rule,
        failed_tests=failed,
        target=target,
        labelled_rows=labelled,
        accuracy=accuracy,
        reference_accuracy=ref_accuracy,
        notes=notes,
    )
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        if config.write_html:
            html = output_dir / f"{result.report_id}.html"
            snapshot.save_html(str(html))
            result.html_path = str(html)
        result.json_path = str(output_dir / f"{result.report_id}.json")
    result.seconds = round(time.perf_counter() - started, 4)
    if result.json_path:
        Path(result.json_path).write_text(json.dumps(result.model_dump(), indent=2))
    logger.info(
        "drift computed",
        extra={
            "report_id": result.report_id,
            "rows": current.rows,
            "drifted_columns": count,
            "drift_detected": result.drift_detected,
            "seconds": result.seconds,
        },
    )
    return result


def _target_and_accuracy(
    reference: FeatureSet, current: FeatureSet, config: DriftConfig, notes: list[str]
) -> tuple[ColumnDrift | None, int, float | None, float | None]:
    """Label drift (chi-square on labelled rows) and accuracy, once enough feedback labels arrived."""
    ref_accuracy = None
    if reference.labels is not None and reference.predictions is not None:
        ok = (reference.labels >= 0) & (reference.predictions >= 0)
        ref_accuracy = float((reference.labels[ok] == reference.predictions[ok]).mean()) if ok.any() else None
    if current.labels is None:
        return None, 0, None, ref_accuracy
    known = current.labels >= 0
    labelled = int(known.sum())
    if labelled < config.min_labels:
        if labelled:
            notes.append(f"{labelled} labelled rows < min_labels={config.min_labels}: no target drift yet")
        return None, labelled, None, ref_accuracy
    accuracy = None
    if current.predictions is not None:
        ok = known & (current.predictions >= 0)
        accuracy = float((current.labels[ok] == current.predictions[ok]).mean()) if ok.sum() else None
    if reference.labels is None:
        notes.append("reference has no `y`: target drift not computed")
        return None, labelled, accuracy, ref_accuracy
    ref_frame = pd.DataFrame({LABEL_COLUMN: reference.labels[reference.labels >= 0].astype(str)})
    cur_frame = pd.DataFrame({LABEL_COLUMN: current.labels[known].astype(str)})
    snapshot = _evidently_report(ref_frame, cur_frame, [], [LABEL_COLUMN], config, config.family_alpha, 0.5)
    columns, _, _, _, _ = _parse_snapshot(snapshot, {LABEL_COLUMN: "target"})
    return (columns[0] if columns else None), labelled, accuracy, ref_accuracy


def detect_drift(
    reference_path: str | Path,
    window_path: str | Path,
    output_dir: str | Path,
    config: DriftConfig | dict[str, Any] | None = None,
) -> DriftResult:
    """Pipeline step: compare a captured window file with the reference file, write the report, return the verdict.

    Both files are NPZ (`x`, optional `y`, `probs`), CSV or Parquet (tabular); see `window.load_samples`.
    """
    from slipway.monitoring.window import load_samples

    cfg = config if isinstance(config, DriftConfig) else DriftConfig(**(config or {}))
    ref = load_samples(Path(reference_path))
    cur = load_samples(Path(window_path))
    ref_set = build_features(ref.x, ref.probs, ref.y, ref.column_names)
    cur_set = build_features(cur.x, cur.probs, cur.y, cur.column_names)
    result = compute_drift(ref_set, cur_set, cfg, Path(output_dir))
    return with_group_slices(result, ref_set, cur_set, Path(reference_path), Path(window_path), cfg)


def with_group_slices(
    result: DriftResult,
    reference: FeatureSet,
    current: FeatureSet,
    reference_path: Path,
    window_path: Path,
    config: DriftConfig,
) -> DriftResult:
    """The result with its per-group slices (when both files carry group labels), its JSON rewritten."""
    slices = drift_by_group(
        reference, current, group_labels(reference_path), group_labels(window_path), config
    )
    if not slices:
        return result
    result = result.model_copy(update={"slices": slices})
    if result.json_path:
        Path(result.json_path).write_text(json.dumps(result.model_dump(), indent=2))
    return result


GROUP_PREFIX = "group_"  # as in the dataset's reference sample (slipway.core.data.GROUP_PREFIX)


def group_labels(path: Path) -> dict[str, np.ndarray]:
    """The `group_<name>` arrays of an NPZ sample file (none for CSV/Parquet, whose columns are all features)."""
    if path.suffix != ".npz":
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {k[len(GROUP_PREFIX) :]: data[k].astype(str) for k in data.files if k.startswith(GROUP_PREFIX)}


def _rows(features: FeatureSet, mask: np.ndarray) -> FeatureSet:
    pick = lambda a: None if a is None else a[mask]  # noqa: E731
    return FeatureSet(
        features.frame[mask].reset_index(drop=True),
        features.numerical,
        features.categorical,
        pick(features.labels),
        pick(features.predictions),
        features.has_outputs,
    )


def drift_by_group(
    reference: FeatureSet,
    current: FeatureSet,
    reference_groups: dict[str, np.ndarray],
    current_groups: dict[str, np.ndarray],
    config: DriftConfig,
) -> list[GroupDrift]:
    """The drift test within each group of each sensitive feature both files carry: which group's inputs moved.

    Captured traffic carries features only, so in practice the window file must get its group labels from the
    user (a window exported and labelled offline); the reference has them when the data had groups.
    """
    quiet = config.model_copy(update={"write_html": False})
    slices = []
    for feature in sorted(reference_groups.keys() & current_groups.keys()):
        ref_labels, cur_labels = reference_groups[feature], current_groups[feature]
        if len(ref_labels) != reference.rows or len(cur_labels) != current.rows:
            raise DataError(
                f"group_{feature}: {len(ref_labels)} reference and {len(cur_labels)} window labels for "
                f"{reference.rows} and {current.rows} rows"
            )
        for group in sorted(set(cur_labels)):
            ref_mask, cur_mask = ref_labels == group, cur_labels == group
            sliced = GroupDrift(
                feature=feature,
                group=group,
                reference_rows=int(ref_mask.sum()),
                current_rows=int(cur_mask.sum()),
            )
            if min(sliced.reference_rows, sliced.current_rows) < config.min_rows:
                sliced.note = (
                    f"fewer than min_rows={config.min_rows} rows in the reference or window: not tested"
                )
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    r = compute_drift(_rows(reference, ref_mask), _rows(current, cur_mask), quiet)
                sliced.drifted_columns = r.drifted_columns
                sliced.share_of_drifted_columns = r.share_of_drifted_columns
                sliced.drift_detected = r.drift_detected
                sliced.accuracy = r.accuracy
            slices.append(sliced)
    return slices

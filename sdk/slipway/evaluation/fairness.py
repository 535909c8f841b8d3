"""Slices and fairness: per-group metrics and disparities with Fairlearn, teacher and student side by side.

Fairlearn's disparity metrics are defined for binary outcomes; a class of a multiclass model is treated one
against the rest (docs/fairness.md):

- selection rate of class k in group g: the share of g's rows predicted k;
- demographic parity difference: max over k of (largest minus smallest selection rate of k across groups);
- equalized odds difference: max over k of the larger of the TPR spread (over groups with rows of class k) and
  the FPR spread (over groups with rows of other classes), one-vs-rest for k;
- worst-group accuracy: the lowest accuracy of any group; accuracy gap: highest minus lowest.

For two classes these equal Fairlearn's own `demographic_parity_difference` and `equalized_odds_difference`
(the latter when every group holds rows of both classes).
"""

from __future__ import annotations

import math
import re
from functools import partial
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from slipway.evaluation.evaluate import Predict, predict_batched


class GroupMetrics(BaseModel):
    """One group's slice of the test split."""

    group: str
    count: int
    accuracy: float
    macro_f1: float
    selection_rate: list[float]  # per class k: share of the group's rows predicted k


class Disparities(BaseModel):
    """One model's metrics for every group of one sensitive feature, and how far apart the groups are."""

    groups: list[GroupMetrics]
    worst_group: str
    worst_group_accuracy: float
    best_group: str
    accuracy_gap: float
    demographic_parity_difference: float
    demographic_parity_class: int  # the class where the spread is largest
    equalized_odds_difference: float
    equalized_odds_class: int

    def group(self, name: str) -> GroupMetrics:
        return next(g for g in self.groups if g.group == name)


class FeatureChange(BaseModel):
    """Student minus teacher (negative accuracy: the student lost it; positive disparity: it grew)."""

    worst_group_accuracy: float
    accuracy_gap: float
    demographic_parity_difference: float
    equalized_odds_difference: float
    accuracy_by_group: dict[str, float]
    largest_group_drop: float  # the most accuracy any one group lost (>= 0 when some group lost accuracy)
    largest_drop_group: str


class FeatureFairness(BaseModel):
    """One sensitive feature (e.g. `style`): teacher, student and the change between them."""

    feature: str
    teacher: Disparities
    student: Disparities
    change: FeatureChange


class FairnessReport(BaseModel):
    """The `fairness` section of the evaluation report, measured on the test split."""

    split: str = "test"
    num_classes: int
    features: list[FeatureFairness]


def _one_vs_rest_rate(y_true: np.ndarray, y_pred: np.ndarray, *, cls: int, positives: bool) -> float:
    """TPR (`positives`) or FPR of class `cls` against the rest; NaN for a group with no such rows, which
    MetricFrame's difference then leaves out (Fairlearn's own rates would count it as 0)."""
    actual, predicted = np.asarray(y_true) == cls, np.asarray(y_pred) == cls
    rows = actual if positives else ~actual
    return float(predicted[rows].mean()) if rows.any() else math.nan


def disparities(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, num_classes: int) -> Disparities:
    """Per-group table and disparities of one model's predictions, from one Fairlearn MetricFrame."""
    from fairlearn.metrics import MetricFrame, count, selection_rate
    from sklearn.metrics import accuracy_score, f1_score

    classes = range(num_classes)
    metrics = {
        "count": count,
        "accuracy": accuracy_score,
        # macro over the classes present in the group (labels or predictions), so a group that never holds a
        # class is not charged a zero F1 for it
        "macro_f1": partial(f1_score, average="macro", zero_division=0),
    }
    for k in classes:
        metrics[f"selection_rate_{k}"] = partial(selection_rate, pos_label=k)
        metrics[f"tpr_{k}"] = partial(_one_vs_rest_rate, cls=k, positives=True)
        metrics[f"fpr_{k}"] = partial(_one_vs_rest_rate, cls=k, positives=False)
    frame = MetricFrame(metrics=metrics, y_true=y_true, y_pred=y_pred, sensitive_features=groups)
    table, spread = frame.by_group, frame.difference().fillna(0.0)  # a rate no two groups have: no spread
    rows = [
        GroupMetrics(
            group=str(name),
            count=int(row["count"]),
            accuracy=float(row["accuracy"]),
            macro_f1=float(row["macro_f1"]),
            selection_rate=[float(row[f"selection_rate_{k}"]) for k in classes],
        )
        for name, row in table.iterrows()
    ]
    accuracy = table["accuracy"].astype(float)
    parity = [float(spread[f"selection_rate_{k}"]) for k in classes]
    odds = [max(float(spread[f"tpr_{k}"]), float(spread[f"fpr_{k}"])) for k in classes]
    return Disparities(
        groups=rows,
        worst_group=str(accuracy.idxmin()),
        worst_group_accuracy=float(accuracy.min()),
        best_group=str(accuracy.idxmax()),
        accuracy_gap=float(spread["accuracy"]),
        demographic_parity_difference=max(parity),
        demographic_parity_class=int(np.argmax(parity)),
        equalized_odds_difference=max(odds),
        equalized_odds_class=int(np.argmax(odds)),
    )


def compare(teacher: Disparities, student: Disparities) -> FeatureChange:
    """What compression did to one sensitive feature's groups."""
    by_group = {
        g.group: student.group(g.group).accuracy - g.accuracy
        for g in teacher.groups
        if any(s.group == g.group for s in student.groups)
    }
    drop_group = min(by_group, key=lambda g: by_group[g])
    return FeatureChange(
        worst_group_accuracy=student.worst_group_accuracy - teacher.worst_group_accuracy,
        accuracy_gap=student.accuracy_gap - teacher.accuracy_gap,
        demographic_parity_difference=student.demographic_parity_difference
        - teacher.demographic_parity_difference,
        equalized_odds_difference=student.equalized_odds_difference - teacher.equalized_odds_difference,
        accuracy_by_group=by_group,
        largest_group_drop=-by_group[drop_group],
        largest_drop_group=drop_group,
    )


def fairness_report(
    y_true: np.ndarray,
    teacher_pred: np.ndarray,
    student_pred: np.ndarray,
    groups: dict[str, np.ndarray],
    num_classes: int,
) -> FairnessReport:
    """Teacher and student predictions (class ids) on the same rows, for every sensitive feature."""
    features = []
    for name, labels in sorted(groups.items()):
        teacher = disparities(y_true, teacher_pred, labels, num_classes)
        student = disparities(y_true, student_pred, labels, num_classes)
        features.append(
            FeatureFairness(feature=name, teacher=teacher, student=student, change=compare(teacher, student))
        )
    return FairnessReport(num_classes=num_classes, features=features)


def evaluate_fairness(
    teacher: Predict,
    student: Predict,
    x: np.ndarray,
    y: np.ndarray,
    groups: dict[str, np.ndarray],
    num_classes: int,
) -> FairnessReport | None:
    """Run both models on the rows and report by group; None when the data carries no group labels."""
    if not groups:
        return None
    teacher_pred = predict_batched(teacher, x).argmax(1)
    student_pred = predict_batched(student, x).argmax(1)
    return fairness_report(y, teacher_pred, student_pred, groups, num_classes)


def _metric_name(text: str) -> str:
    """MLflow metric names allow letters, digits, `_-. /`: anything else in a group label becomes `_`."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", text)


def fairness_metrics(report: FairnessReport) -> dict[str, float]:
    """Flat numbers for MLflow: `fairness.<feature>.<model>.<metric>` and per-group accuracy and count."""
    out: dict[str, float] = {}
    for f in report.features:
        feature = _metric_name(f.feature)
        for role, d in (("teacher", f.teacher), ("student", f.student)):
            prefix = f"fairness.{feature}.{role}"
            out |= {
                f"{prefix}.worst_group_accuracy": d.worst_group_accuracy,
                f"{prefix}.accuracy_gap": d.accuracy_gap,
                f"{prefix}.demographic_parity_difference": d.demographic_parity_difference,
                f"{prefix}.equalized_odds_difference": d.equalized_odds_difference,
            }
            for g in d.groups:
                out[f"{prefix}.group.{_metric_name(g.group)}.accuracy"] = g.accuracy
                out[f"{prefix}.group.{_metric_name(g.group)}.macro_f1"] = g.macro_f1
        change = f.change.model_dump(exclude={"accuracy_by_group", "largest_drop_group"})
        out |= {f"fairness.{feature}.change.{k}": float(v) for k, v in change.items()}
    return {k: v for k, v in out.items() if math.isfinite(v)}


def write_fairness_table(report: FairnessReport, path: str | Path) -> Path:
    """One CSV row per (feature, group, model): count, accuracy, macro-F1, selection rate per class."""
    import pandas as pd

    rows = [
        {"feature": f.feature, "group": g.group, "model": role, "count": g.count, "accuracy": g.accuracy}
        | {"macro_f1": g.macro_f1}
        | {f"selection_rate_{k}": r for k, r in enumerate(g.selection_rate)}
        for f in report.features
        for role, d in (("teacher", f.teacher), ("student", f.student))
        for g in d.groups
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return Path(path)

"""Offline explanations of a teacher and its student on the same test rows: where each looks, whether the student
looks where the teacher looks, and whether the maps depend on the weights at all (docs/explanations.md).

- Attributions of every configured method (slipway.evaluation.attribution) towards each row's true class, on a
  stratified, seeded sample of the test split; per-class means; the most and least confident rows (by the
  student's top probability).
- Agreement: Spearman rank correlation of teacher vs student per-class mean |attribution| maps.
- Sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): the same attributions from a copy of
  each model with re-initialized weights must rank the inputs differently; a map that survives randomizing
  the weights explains the input, not the model.

Positions where the input is 0 (the baseline) are left out of every rank correlation: Integrated Gradients and
occlusion give them zero attribution whatever the weights, so on sparse inputs (digits: half the pixels) they
would tie in every pair of maps and make any two maps look alike.
"""

from __future__ import annotations

import base64
import copy
import html
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn

from slipway.core.config import ExplainConfig
from slipway.evaluation.attribution import attribute, check_method
from slipway.evaluation.explain_figures import plot_rows

SANITY_ROWS = (
    64  # rows of the sample the sanity check re-explains (its mean correlation is stable well below)
)
REPORT_FILES = ("explanation.json", "report.md", "report.html")
MEANS_FILE = "class_attributions.npz"  # per model and method: mean |attribution| per class, shaped like x
ROLES = ("teacher", "student")


class SanityCheck(BaseModel):
    """The randomization check of one model: passed when every method's correlation is at most threshold."""

    passed: bool
    rank_correlation: float  # the highest over methods (the worst case)
    threshold: float
    method: str  # the method with that correlation
    by_method: dict[str, float] = Field(default_factory=dict)
    rows: int = 0  # rows re-explained


class Example(BaseModel):
    """One of the most or least confident test rows (by the student's top probability)."""

    row: int  # index into the test split
    kind: Literal["most_confident", "least_confident"]
    label: int
    teacher_prediction: int
    student_prediction: int
    student_confidence: float


class ExplanationReport(BaseModel):
    """explanation.json: what the explain step found (the model card reads it)."""

    enabled: bool
    reason: str | None = None  # why it is off or empty
    methods: list[str] = Field(default_factory=list)
    samples: int = 0
    steps: int = 0  # Integrated Gradients steps
    compared_method: str = ""
    class_names: list[str] = Field(default_factory=list)
    input_shape: list[int] = Field(default_factory=list)
    rank_correlation_by_class: dict[str, float] = Field(
        default_factory=dict
    )  # compared method, per class name
    rank_correlation_by_method: dict[str, float] = Field(default_factory=dict)  # mean over classes
    rank_correlation_per_method: dict[str, dict[str, float]] = Field(default_factory=dict)  # method -> class
    mean_rank_correlation: float | None = None  # compared method, mean over classes
    sanity: dict[str, SanityCheck] = Field(default_factory=dict)  # "teacher", "student"
    cost_ms_per_image: dict[str, dict[str, float]] = Field(default_factory=dict)  # model -> method -> ms
    examples: list[Example] = Field(default_factory=list)
    figures: list[str] = Field(default_factory=list)  # PNG file names in the folder
    seconds: float = 0.0


# ----------------------------------------------------------------------------------------------------------
# The numbers


def stratified_rows(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a stratified, seeded sample of n rows (all rows, in order, when n covers them)."""
    if n >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    try:
        rows, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    except ValueError:  # a class too small to stratify: a plain seeded sample
        rows = np.random.default_rng(seed).choice(len(y), n, replace=False)
    return np.sort(rows)


def rank_correlation(a: np.ndarray, b: np.ndarray, keep: np.ndarray | None = None) -> float:
    """Spearman rank correlation of two maps (flattened), over the positions in `keep` (all when None or when
    fewer than two are kept). A constant map has no ranking: 1.0 against an equal map, else 0.0."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if keep is not None and int(np.count_nonzero(keep)) >= 2:
        a, b = a[np.ravel(keep)], b[np.ravel(keep)]
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(spearmanr(a, b).statistic)


def mean_row_correlation(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> float:
    """Mean over rows of the rank correlation of |a| and |b|, each row over the positions where x is not 0."""
    values = [rank_correlation(np.abs(ai), np.abs(bi), xi != 0) for ai, bi, xi in zip(a, b, x, strict=True)]
    return float(np.mean(values)) if values else 0.0


def randomized_copy(model: nn.Module, seed: int) -> nn.Module:
    """A deep copy with every weight re-initialized (seeded, without touching the global RNG): each module's own
    `reset_parameters` where it has one, a normal draw at the trained tensor's scale for any other parameter."""
    clone = copy.deepcopy(model)
    reset: set[int] = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            reset_parameters = getattr(module, "reset_parameters", None)
            if callable(reset_parameters):
                reset_parameters()
                reset |= {id(p) for p in module.parameters(recurse=False)}
        with torch.no_grad():
            for p in clone.parameters():
                if id(p) not in reset:
                    std = float(p.std()) if p.numel() > 1 else 0.0
                    nn.init.normal_(p, 0.0, std if std > 0 else 0.02)
    return clone.eval()


def sanity_check(
    model: nn.Module,
    x: np.ndarray,
    target: np.ndarray,
    trained: dict[str, np.ndarray],
    threshold: float,
    steps: int,
    seed: int,
) -> SanityCheck:
    """Adebayo's randomization check: `trained` holds each method's attributions of `model` on (x, target)."""
    randomized = randomized_copy(model, seed)
    by_method = {
        method: mean_row_correlation(a, attribute(randomized, x, method, target, steps=steps), x)
        for method, a in trained.items()
    }
    worst = max(by_method, key=lambda m: by_method[m])
    return SanityCheck(
        passed=all(v <= threshold for v in by_method.values()),
        rank_correlation=by_method[worst],
        threshold=threshold,
        method=worst,
        by_method=by_method,
        rows=len(x),
    )


def _probabilities(model: nn.Module, x: np.ndarray) -> np.ndarray:
    from slipway.training.loop import predict_logits

    return torch.softmax(predict_logits(model, x), dim=1).numpy()


def _examples(
    rows: np.ndarray, y: np.ndarray, teacher_p: np.ndarray, student_p: np.ndarray, count: int
) -> list[tuple[int, Example]]:
    """(position in the sample, Example) for the `count` most and then `count` least confident rows."""
    confidence = student_p.max(axis=1)
    order = np.argsort(-confidence, kind="stable")
    most = [int(i) for i in order[:count]]
    least = [int(i) for i in order[::-1] if int(i) not in most][:count]
    out = []
    for kind, picked in (("most_confident", most), ("least_confident", least)):
        for i in picked:
            example = Example(
                row=int(rows[i]),
                kind=kind,  # type: ignore[arg-type]
                label=int(y[i]),
                teacher_prediction=int(teacher_p[i].argmax()),
                student_prediction=int(student_p[i].argmax()),
                student_confidence=float(confidence[i]),
            )
            out.append((i, example))
    return out


def explain(
    teacher: nn.Module,
    student: nn.Module,
    x_test: np.ndarray,
    y_test: np.ndarray,
    cfg: ExplainConfig,
    folder: Path,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
) -> ExplanationReport:
    """Explain teacher and student on a sample of the test split; write the report folder and return the report."""
    folder.mkdir(parents=True, exist_ok=True)
    num_classes = int(max(int(y_test.max()) + 1, len(class_names or [])))
    names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
    if not cfg.enabled:
        return write_report(disabled_report("explain.enabled is false"), folder)
    started = time.perf_counter()
    methods: list[str] = [check_method(m) for m in cfg.methods]
    rows = stratified_rows(y_test, cfg.samples, seed)
    x = np.ascontiguousarray(x_test[rows], dtype=np.float32)
    y = np.asarray(y_test[rows], dtype=np.int64)
    models = {"teacher": teacher.eval(), "student": student.eval()}

    attributions: dict[str, dict[str, np.ndarray]] = {role: {} for role in ROLES}
    cost: dict[str, dict[str, float]] = {role: {} for role in ROLES}
    for role, model in models.items():
        for method in methods:
            attribute(model, x[:1], method, y[:1], steps=cfg.steps)  # warm-up: the timing is the steady state
            t0 = time.perf_counter()
            attributions[role][method] = attribute(model, x, method, y, steps=cfg.steps)
            cost[role][method] = round((time.perf_counter() - t0) * 1000 / len(x), 3)

    classes = [int(k) for k in np.unique(y)]
    means: dict[str, np.ndarray] = {}  # "<role>.<method>" -> (classes, *shape) mean |attribution|
    by_method: dict[str, dict[str, float]] = {}
    for method in methods:
        by_class: dict[str, float] = {}
        for role in ROLES:
            a = np.abs(attributions[role][method])
            means[f"{role}.{method}"] = np.stack([a[y == k].mean(axis=0) for k in classes])
        for i, k in enumerate(classes):
            informative = (x[y == k] != 0).any(axis=0)
            by_class[names[k]] = rank_correlation(
                means[f"teacher.{method}"][i], means[f"student.{method}"][i], informative
            )
        by_method[method] = by_class
    compared = methods[0]

    sanity_rows = min(SANITY_ROWS, len(x))
    sanity = {
        role: sanity_check(
            models[role],
            x[:sanity_rows],
            y[:sanity_rows],
            {m: a[:sanity_rows] for m, a in attributions[role].items()},
            cfg.sanity_max_correlation,
            cfg.steps,
            seed,
        )
        for role in ROLES
    }

    teacher_p, student_p = _probabilities(teacher, x), _probabilities(student, x)
    picked = _examples(rows, y, teacher_p, student_p, cfg.examples)

    arrays = {k: v.astype(np.float32) for k, v in means.items()}
    np.savez(folder / MEANS_FILE, classes=np.array(classes), **arrays)  # type: ignore[arg-type]  # numpy: **kwds
    figures = _figures(folder, x, y, classes, names, methods, attributions, means, picked, feature_names)
    report = ExplanationReport(
        enabled=True,
        methods=list(methods),
        samples=len(x),
        steps=cfg.steps,
        compared_method=compared,
        class_names=names,
        input_shape=[int(d) for d in x.shape[1:]],
        rank_correlation_by_class=by_method[compared],
        rank_correlation_by_method={m: float(np.mean(list(v.values()))) for m, v in by_method.items()},
        rank_correlation_per_method=by_method,
        mean_rank_correlation=float(np.mean(list(by_method[compared].values()))),
        sanity=sanity,
        cost_ms_per_image=cost,
        examples=[e for _, e in picked],
        figures=figures,
        seconds=round(time.perf_counter() - started, 2),
    )
    return write_report(report, folder)


def disabled_report(reason: str) -> ExplanationReport:
    return ExplanationReport(enabled=False, reason=reason)


# ----------------------------------------------------------------------------------------------------------
# The folder: figures, explanation.json, report.md, report.html


def _figures(
    folder: Path,
    x: np.ndarray,
    y: np.ndarray,
    classes: list[int],
    names: list[str],
    methods: list[str],
    attributions: dict[str, dict[str, np.ndarray]],
    means: dict[str, np.ndarray],
    picked: list[tuple[int, Example]],
    feature_names: Sequence[str] | None,
) -> list[str]:
    """Per method: the class means (input | teacher | student), and the examples when there are any."""
    figures = []
    class_inputs = np.stack([x[y == k].mean(axis=0) for k in classes])
    class_labels = [f"class {names[k]}" for k in classes]
    for method in methods:
        name = f"classes-{method}.png"
        panels = {role: means[f"{role}.{method}"] for role in ROLES}
        if x.ndim == 2:  # tabular: signed means read better (which way a feature pushes)
            panels = {
                role: np.stack([attributions[role][method][y == k].mean(axis=0) for k in classes])
                for role in ROLES
            }
        title = f"{method}: mean attribution towards the true class, per class"
        plot_rows(folder / name, class_inputs, panels, class_labels, title, feature_names)
        figures.append(name)
        if picked:
            at = [i for i, _ in picked]
            labels = [
                f"{'most' if e.kind == 'most_confident' else 'least'} #{e.row}\ny={names[e.label]} "
                f"s={names[e.student_prediction]} ({e.student_confidence:.2f})"
                for _, e in picked
            ]
            name = f"examples-{method}.png"
            ex_panels = {role: attributions[role][method][at] for role in ROLES}
            title = f"{method}: most and least confident test rows (by the student), towards the true class y"
            plot_rows(folder / name, x[at], ex_panels, labels, title, feature_names)
            figures.append(name)
    return figures


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(report: ExplanationReport) -> str:
    """report.md: the numbers as tables, the figures by relative path (see `inline_figures` for KFP's view)."""
    if not report.enabled:
        return f"# Explanations\n\nNo explanations: {report.reason}.\n"
    compared = report.compared_method
    lines = [
        "# Explanations: teacher vs student",
        "",
        f"{report.samples} test rows (a stratified sample), attributions towards each row's true class with "
        f"{', '.join(report.methods)} (Integrated Gradients: {report.steps} steps, baseline 0). "
        f"Teacher and student are compared with `{compared}`: "
        f"mean rank correlation **{_fmt(report.mean_rank_correlation)}** (1: the same ranking of input positions).",
        "",
        "## Does the student look where the teacher looks?",
        "",
        "Spearman rank correlation of the per-class mean |attribution| maps (positions where the input is 0 left out).",
        "",
        "| class | " + " | ".join(report.methods) + " |",
        "| --- | " + " | ".join("---:" for _ in report.methods) + " |",
        "| **mean** | "
        + " | ".join(_fmt(report.rank_correlation_by_method.get(m)) for m in report.methods)
        + " |",
    ]
    for name in report.rank_correlation_by_class:
        per = [_fmt(report.rank_correlation_per_method.get(m, {}).get(name)) for m in report.methods]
        lines.append(f"| {name} | " + " | ".join(per) + " |")
    lines += [
        "",
        "## Sanity check (Adebayo et al. 2018)",
        "",
        "The same attributions from a copy with re-initialized weights must rank the inputs differently: passed when "
        "every method's rank correlation with the trained model's maps is at most the threshold.",
        "",
        "| model | passed | highest correlation | method | threshold | " + " | ".join(report.methods) + " |",
        "| --- | --- | ---: | --- | ---: | " + " | ".join("---:" for _ in report.methods) + " |",
    ]
    for role, s in report.sanity.items():
        columns = " | ".join(_fmt(s.by_method.get(m)) for m in report.methods)
        lines.append(
            f"| {role} | {'yes' if s.passed else '**no**'} | {_fmt(s.rank_correlation)} | {s.method} | "
            f"{s.threshold:.2f} | {columns} |"
        )
    lines += ["", "## Cost (ms per image, CPU)", "", "| model | " + " | ".join(report.methods) + " |"]
    lines.append("| --- | " + " | ".join("---:" for _ in report.methods) + " |")
    for role, ms in report.cost_ms_per_image.items():
        lines.append(f"| {role} | " + " | ".join(f"{ms.get(m, 0):.2f}" for m in report.methods) + " |")
    if report.examples:
        lines += [
            "",
            "## Most and least confident test rows (by the student)",
            "",
            "| row | kind | label | teacher | student | student confidence |",
            "| ---: | --- | --- | --- | --- | ---: |",
        ]
        for e in report.examples:
            lines.append(
                f"| {e.row} | {e.kind.replace('_', ' ')} | {report.class_names[e.label]} | "
                f"{report.class_names[e.teacher_prediction]} | {report.class_names[e.student_prediction]} | "
                f"{e.student_confidence:.3f} |"
            )
    lines += ["", "## Figures", ""]
    lines += [f"![{name}]({name})" for name in report.figures]
    return "\n".join(lines) + "\n"


def inline_figures(text: str, folder: Path) -> str:
    """Markdown with its figure links replaced by data URIs: the KFP UI shows a Markdown artifact alone."""

    def data_uri(match: re.Match[str]) -> str:
        path = folder / match.group(2)
        if not path.is_file():
            return match.group(0)
        return f"![{match.group(1)}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"

    return re.sub(r"!\[([^\]]*)\]\(([^)\s:]+\.png)\)", data_uri, text)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(report: ExplanationReport) -> str:
    """report.html: a plain page, figures by relative path, the same numbers as report.md."""
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Explanations</title><style>{style}</style></head><body>"
    ]
    parts.append("<h1>Explanations: teacher vs student</h1>")
    if not report.enabled:
        parts.append(f"<p>No explanations: {html.escape(report.reason or '')}.</p></body></html>")
        return "".join(parts)
    parts.append(
        f"<p>{report.samples} test rows, methods {html.escape(', '.join(report.methods))}; compared with "
        f"<code>{html.escape(report.compared_method)}</code>: mean rank correlation "
        f"<b>{_fmt(report.mean_rank_correlation)}</b>.</p>"
    )
    parts.append("<h2>Rank correlation, teacher vs student, per class</h2>")
    parts.append(
        _table(
            ["class", report.compared_method],
            [[name, _fmt(v)] for name, v in report.rank_correlation_by_class.items()]
            + [[f"mean ({m})", _fmt(v)] for m, v in report.rank_correlation_by_method.items()],
        )
    )
    parts.append("<h2>Sanity check (Adebayo et al. 2018)</h2>")
    parts.append(
        _table(
            ["model", "passed", "highest correlation", "method", "threshold", *report.methods],
            [
                [role, "yes" if s.passed else "no", _fmt(s.rank_correlation), s.method, f"{s.threshold:.2f}"]
                + [_fmt(s.by_method.get(m)) for m in report.methods]
                for role, s in report.sanity.items()
            ],
        )
    )
    parts.append("<h2>Cost (ms per image, CPU)</h2>")
    parts.append(
        _table(
            ["model", *report.methods],
            [
                [role, *(f"{per.get(m, 0):.2f}" for m in report.methods)]
                for role, per in report.cost_ms_per_image.items()
            ],
        )
    )
    if report.examples:
        parts.append("<h2>Most and least confident test rows (by the student)</h2>")
        parts.append(
            _table(
                ["row", "kind", "label", "teacher", "student", "student confidence"],
                [
                    [str(e.row), e.kind.replace("_", " "), report.class_names[e.label],
                     report.class_names[e.teacher_prediction], report.class_names[e.student_prediction],
                     f"{e.student_confidence:.3f}"]
                    for e in report.examples
                ],
            )
        )  # fmt: skip
    parts.append("<h2>Figures</h2>")
    parts += [f"<p><img src='{html.escape(name)}' alt='{html.escape(name)}'></p>" for name in report.figures]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report: ExplanationReport, folder: Path) -> ExplanationReport:
    """explanation.json, report.md and report.html into `folder` (the figures are there already)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "explanation.json").write_text(report.model_dump_json(indent=2))
    (folder / "report.md").write_text(markdown(report))
    (folder / "report.html").write_text(html_page(report))
    return report


# ----------------------------------------------------------------------------------------------------------
# One model on given rows (`slipway explain`)

FIGURE_ROWS = 8  # rows drawn in attributions.png (every row's attributions are in attributions.npz)


class RowPrediction(BaseModel):
    row: int
    predicted: int
    probability: float  # of the predicted class
    target: int  # the class the attributions explain
    label: int | None = None  # when the input file has y


class RowsExplanation(BaseModel):
    """explanation.json of `slipway explain`: one model, the given rows."""

    model: dict[str, str]  # where the checkpoint came from: path, sha256, registry name and version
    rows: int
    input_shape: list[int]
    methods: list[str]
    steps: int
    target: str  # "prediction" or the class id given
    accuracy: float | None = None  # when the input file has y
    predictions: list[RowPrediction]
    sanity: SanityCheck
    ms_per_image: dict[str, float]
    attributions: str = "attributions.npz"  # one array per method, shaped like the input
    figures: list[str] = Field(default_factory=list)


def explain_rows(
    model: nn.Module,
    x: np.ndarray,
    methods: Sequence[str],
    folder: Path,
    *,
    y: np.ndarray | None = None,
    target_class: int | None = None,
    steps: int = 32,
    sanity_max_correlation: float = 0.5,
    seed: int = 0,
    source: dict[str, str] | None = None,
) -> RowsExplanation:
    """Attributions of every row of x towards `target_class` (default: the model's prediction), the sanity check
    on the first SANITY_ROWS rows, a figure of the first FIGURE_ROWS rows; written into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    methods = [str(check_method(m)) for m in methods]
    x = np.ascontiguousarray(x, dtype=np.float32)
    model = model.eval()
    p = _probabilities(model, x)
    predicted = p.argmax(axis=1)
    target = predicted if target_class is None else np.full(len(x), target_class, dtype=np.int64)
    attributions: dict[str, np.ndarray] = {}
    cost: dict[str, float] = {}
    for method in methods:
        t0 = time.perf_counter()
        attributions[method] = attribute(model, x, method, target, steps=steps)
        cost[method] = round((time.perf_counter() - t0) * 1000 / len(x), 3)
    np.savez(folder / "attributions.npz", **attributions)  # type: ignore[arg-type]  # numpy stubs: **kwds
    n = min(SANITY_ROWS, len(x))
    sanity = sanity_check(
        model,
        x[:n],
        target[:n],
        {m: a[:n] for m, a in attributions.items()},
        sanity_max_correlation,
        steps,
        seed,
    )
    shown = min(FIGURE_ROWS, len(x))
    labels = [
        f"row {i}: pred {predicted[i]} ({p[i, predicted[i]]:.2f})"
        + (f"\ny={int(y[i])}" if y is not None else "")
        for i in range(shown)
    ]
    what = "the prediction" if target_class is None else f"class {target_class}"
    plot_rows(
        folder / "attributions.png",
        x[:shown],
        {m: a[:shown] for m, a in attributions.items()},
        labels,
        f"attributions towards {what}",
    )
    result = RowsExplanation(
        model=dict(source or {}),
        rows=len(x),
        input_shape=[int(d) for d in x.shape[1:]],
        methods=list(methods),
        steps=steps,
        target="prediction" if target_class is None else str(target_class),
        accuracy=None if y is None else float((predicted == y).mean()),
        predictions=[
            RowPrediction(
                row=i,
                predicted=int(predicted[i]),
                probability=float(p[i, predicted[i]]),
                target=int(target[i]),
                label=None if y is None else int(y[i]),
            )
            for i in range(len(x))
        ],
        sanity=sanity,
        ms_per_image=cost,
        figures=["attributions.png"],
    )
    (folder / "explanation.json").write_text(result.model_dump_json(indent=2))
    return result

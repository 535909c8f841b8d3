"""The model card of a registered version (after Mitchell et al. 2019, "Model Cards for Model Reporting").

Built from the files of the run that produced the version, never from defaults: the evaluation report (overall
metrics, the `fairness` section by group), the format selection (the compression chain), the PyTorch
checkpoints (architectures, pruning), the dataset file (fingerprint, sizes, groups), the explain step's
`explanation.json`, the gate decision, and the registry's record (version, aliases, digests). A section whose
step was off says "not computed" and why. Rendered as Markdown and as HTML (every value escaped) from one
list of sections, so the two never disagree.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from slipway.compression.selection import Candidate, Selection
from slipway.core.config import ModelCardConfig, TritonConfig
from slipway.core.data import DatasetSplits
from slipway.evaluation.evaluate import ModelEvaluation
from slipway.evaluation.fairness import FairnessReport
from slipway.evaluation.gate import GateDecision

SCHEMA_VERSION = 1
# The card's files in its folder (the KFP artifact, the registry's `model_card/`); the Triton version folder gets
# the Markdown and HTML ones (serving.triton_repository.MODEL_CARD_FILES).
CARD_FILES = {"markdown": "model_card.md", "html": "model_card.html", "json": "model_card.json"}
EXPLANATION_FILE = "explanation.json"  # in the explain step's output folder
NOT_COMPUTED = "not computed"


class ModelDetails(BaseModel):
    """Who and what: the registered version and the digests that name its bytes."""

    name: str
    version: str
    aliases: list[str]  # at registration; promotion moves `champion` later
    registered_at: str  # UTC, ISO 8601, from the registry
    owners: list[str]
    mlflow_run_id: str
    served_file: str
    served_sha256: str
    checkpoint_sha256: str
    slipway_version: str


class IntendedUse(BaseModel):
    """The user's text (config section `card`)."""

    intended_use: str
    limitations: str


class DataSummary(BaseModel):
    name: str
    fingerprint: str
    input_shape: list[int]
    num_classes: int
    class_names: list[str]
    split_sizes: dict[str, int]
    sensitive_features: dict[str, dict[str, int]]  # feature -> group -> rows in the test split


class OverallMetrics(BaseModel):
    """Teacher and chosen student on the same test split, in ONNX Runtime."""

    teacher: ModelEvaluation
    student: ModelEvaluation
    accuracy_change_points: float  # (student - teacher) * 100


class Compression(BaseModel):
    """The chain teacher -> student -> pruned -> quantized, every candidate with its numbers, and the ratios of the
    chosen one to the teacher."""

    teacher_architecture: str | None  # None: the teacher's checkpoint was not given
    student_architecture: str
    chosen: str
    floor: bool
    reference_accuracy: float
    budget_points: float
    candidates: list[Candidate]
    reasons: list[str]
    pruning: PruningSummary | None  # None: the chosen format is not a pruned one
    params_ratio: float  # teacher params / student params
    size_ratio: float  # teacher bytes / student bytes
    throughput_ratio: float  # student / teacher, batch 64
    latency_p99_ratio: float  # student / teacher, batch 1


class PruningSummary(BaseModel):
    """The numbers of the checkpoint's pruning record (compression.pruning.PruneReport) without the kept
    channel indices; a view of its own so that reading a card never imports torch."""

    model_config = ConfigDict(extra="ignore")
    method: str
    ratio: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    val_accuracy_before: float
    val_accuracy_pruned: float
    val_accuracy_finetuned: float
    finetune_epochs: int


class SanityResult(BaseModel):
    """Adebayo et al. 2018: attributions of the weight-randomized model must differ from the trained one's."""

    model_config = ConfigDict(extra="ignore")
    passed: bool
    rank_correlation: float
    threshold: float


class ExplanationSummary(BaseModel):
    """The numbers of the explain step's explanation.json that the card shows (the contract's field names)."""

    model_config = ConfigDict(extra="ignore")
    enabled: bool
    reason: str | None = None
    methods: list[str] = []
    samples: int = 0
    compared_method: str | None = None
    class_names: list[str] = []
    rank_correlation_by_class: dict[str, float] = {}
    mean_rank_correlation: float | None = None
    sanity: dict[str, SanityResult] = {}
    cost_ms_per_image: dict[str, dict[str, float]] = {}
    figures: list[str] = []


class Serving(BaseModel):
    """What is packaged for Triton and how fast it ran on CPU in the evaluate step."""

    format: str
    runtime: str
    latency_ms_p50_b1: float
    latency_ms_p99_b1: float
    throughput_ips_b64: float
    threads: int | None  # evaluate.threads (None: all cores)
    max_batch_size: int
    dynamic_batching: bool
    preferred_batch_sizes: list[int]
    max_queue_delay_us: int
    instance_count: int
    instance_kind: str


class ModelCard(BaseModel):
    schema_version: int = SCHEMA_VERSION
    details: ModelDetails
    use: IntendedUse
    data: DataSummary
    metrics: OverallMetrics
    slices: FairnessReport | None  # None: the data has no group labels
    compression: Compression | None  # None: no format selection report was given
    explanation: ExplanationSummary
    gate: GateDecision
    serving: Serving


# ----------------------------------------------------------------------------------------------------------
# Building


def architecture(spec: dict[str, Any]) -> str:
    """`student_cnn(width=16, stages=2)` from a checkpoint's `spec`."""
    kwargs = ", ".join(f"{k}={v!r}" for k, v in sorted((spec.get("kwargs") or {}).items()))
    return f"{spec['architecture']}({kwargs})"


def read_explanation(folder: Path | None) -> ExplanationSummary:
    """The explain step's summary, or an empty one that says why there is none."""
    if folder is None:
        return ExplanationSummary(enabled=False, reason="the explain step did not run for this version")
    path = folder / EXPLANATION_FILE if folder.is_dir() else folder
    if not path.is_file():
        return ExplanationSummary(enabled=False, reason=f"the explain step wrote no {EXPLANATION_FILE}")
    return ExplanationSummary.model_validate_json(path.read_text())


def data_summary(splits: DatasetSplits, class_names: list[str]) -> DataSummary:
    import numpy as np

    sizes = {which: len(splits.split(which)[1]) for which in ("train", "val", "test")}
    if splits.has_recent:
        sizes["recent"] = len(splits.split("recent")[1])
    features: dict[str, dict[str, int]] = {}
    for feature, labels in sorted(splits.groups_of("test").items()):
        values, counts = np.unique(labels, return_counts=True)
        features[feature] = {str(v): int(c) for v, c in zip(values, counts, strict=True)}
    return DataSummary(
        name=splits.name,
        fingerprint=splits.fingerprint,
        input_shape=list(splits.input_shape),
        num_classes=splits.num_classes,
        class_names=class_names or [str(k) for k in range(splits.num_classes)],
        split_sizes=sizes,
        sensitive_features=features,
    )


def compression_summary(
    teacher: ModelEvaluation,
    student: ModelEvaluation,
    selection: Selection,
    teacher_spec: dict[str, Any] | None,
    student_payload: dict[str, Any],
) -> Compression:
    pruning = student_payload.get("pruning")
    return Compression(
        teacher_architecture=architecture(teacher_spec) if teacher_spec else None,
        student_architecture=architecture(student_payload["spec"]),
        chosen=selection.chosen,
        floor=selection.floor,
        reference_accuracy=selection.reference_accuracy,
        budget_points=selection.budget_points,
        candidates=selection.candidates,
        reasons=selection.reasons,
        pruning=PruningSummary.model_validate(pruning) if pruning else None,
        params_ratio=teacher.params / student.params,
        size_ratio=teacher.size_bytes / student.size_bytes,
        throughput_ratio=student.throughput_ips_b64 / teacher.throughput_ips_b64,
        latency_p99_ratio=student.latency_ms_p99_b1 / teacher.latency_ms_p99_b1,
    )


def build_card(
    *,
    details: ModelDetails,
    text: ModelCardConfig,
    splits: DatasetSplits,
    teacher: ModelEvaluation,
    student: ModelEvaluation,
    fairness: FairnessReport | None,
    selection: Selection | None,
    teacher_spec: dict[str, Any] | None,
    student_payload: dict[str, Any],
    explanation: ExplanationSummary,
    decision: GateDecision,
    triton: TritonConfig,
    threads: int | None,
) -> ModelCard:
    """The card from the run's parsed files; `student_payload` is the chosen candidate's checkpoint payload."""
    compression = None
    if selection is not None:
        compression = compression_summary(teacher, student, selection, teacher_spec, student_payload)
    serving = Serving(
        format=student.format,
        runtime=student.runtime,
        latency_ms_p50_b1=student.latency_ms_p50_b1,
        latency_ms_p99_b1=student.latency_ms_p99_b1,
        throughput_ips_b64=student.throughput_ips_b64,
        threads=threads,
        max_batch_size=triton.max_batch_size,
        dynamic_batching=triton.dynamic_batching,
        preferred_batch_sizes=triton.preferred_batch_sizes,
        max_queue_delay_us=triton.max_queue_delay_us,
        instance_count=triton.instance_count,
        instance_kind=triton.instance_kind,
    )
    return ModelCard(
        details=details,
        use=IntendedUse(intended_use=text.intended_use, limitations=text.limitations),
        data=data_summary(splits, explanation.class_names),
        metrics=OverallMetrics(
            teacher=teacher,
            student=student,
            accuracy_change_points=(student.accuracy - teacher.accuracy) * 100,
        ),
        slices=fairness,
        compression=compression,
        explanation=explanation,
        gate=decision,
        serving=serving,
    )


# ----------------------------------------------------------------------------------------------------------
# Rendering: sections of paragraphs and tables, then Markdown or HTML from the same sections


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Items:
    items: list[str]


Block = str | Table | Items  # a paragraph, a table or a list


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


def acc(x: float) -> str:
    return f"{x:.4f}"


def points(x: float) -> str:
    return f"{x:+.2f} points"


def ms(x: float) -> str:
    return f"{x:.3f} ms"


def per_s(x: float) -> str:
    return f"{x:,.0f}/s"


def kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def ratio(x: float) -> str:
    return f"{x:.2f}x"


def corr(x: float) -> str:
    return f"{x:.3f}"


def _details(card: ModelCard) -> Section:
    d = card.details
    rows = [
        ["model", d.name],
        ["version", d.version],
        ["aliases at registration", ", ".join(d.aliases) or "none"],
        ["registered", d.registered_at],
        ["owners", ", ".join(d.owners) or "none given (set card.owners)"],
        ["MLflow run", d.mlflow_run_id],
        [f"sha256 of {d.served_file} (served)", d.served_sha256],
        ["sha256 of the PyTorch checkpoint", d.checkpoint_sha256],
        ["dataset fingerprint", card.data.fingerprint],
        ["Slipway", d.slipway_version],
    ]
    return Section("Model details", [Table(["field", "value"], rows)])


def _use(card: ModelCard) -> Section:
    return Section("Intended use", [card.use.intended_use])


def _data(card: ModelCard) -> Section:
    d = card.data
    blocks: list[Block] = [
        f"Dataset {d.name}, fingerprint {d.fingerprint}; input shape {tuple(d.input_shape)}, "
        f"{d.num_classes} classes ({', '.join(d.class_names)}).",
        Table(["split", "rows"], [[k, f"{v:,}"] for k, v in d.split_sizes.items()]),
    ]
    if d.sensitive_features:
        rows = [[f, g, f"{n:,}"] for f, groups in d.sensitive_features.items() for g, n in groups.items()]
        blocks += [
            "Sensitive features (group labels) in the test split:",
            Table(["feature", "group", "rows"], rows),
        ]
    else:
        blocks.append("Sensitive features: none (the data carries no group labels).")
    return Section("Data", blocks)


def _evaluation_row(label: str, e: ModelEvaluation) -> list[str]:
    return [
        label,
        e.format,
        acc(e.accuracy),
        acc(e.macro_f1),
        f"{e.params:,}",
        kib(e.size_bytes),
        ms(e.latency_ms_p50_b1),
        ms(e.latency_ms_p99_b1),
        per_s(e.throughput_ips_b64),
    ]


def _metrics(card: ModelCard) -> Section:
    m = card.metrics
    header = [
        "model",
        "format",
        "accuracy",
        "macro-F1",
        "params",
        "size",
        "p50 b1",
        "p99 b1",
        "throughput b64",
    ]
    names = card.data.class_names
    per_class = [
        [names[k] if k < len(names) else str(k), acc(t), acc(s), points((s - t) * 100)]
        for k, (t, s) in enumerate(
            zip(m.teacher.per_class_accuracy, m.student.per_class_accuracy, strict=False)
        )
    ]
    return Section(
        "Metrics (test split)",
        [
            Table(
                header,
                [_evaluation_row("teacher", m.teacher), _evaluation_row("student (served)", m.student)],
            ),
            f"Student minus teacher: {points(m.accuracy_change_points)} of accuracy.",
            Table(["class", "teacher accuracy", "student accuracy", "change"], per_class),
        ],
    )


def _slices(card: ModelCard) -> Section:
    report = card.slices
    if report is None:
        return Section(
            "Metrics by slice (fairness)",
            [
                f"{NOT_COMPUTED}: the data carries no group labels (data.sensitive_features, NPZ group_<name>)."
            ],
        )
    blocks: list[Block] = [f"Measured on the {report.split} split with Fairlearn (docs/fairness.md)."]
    for f in report.features:
        rows = [
            [
                g.group,
                f"{g.count:,}",
                acc(g.accuracy),
                acc(f.student.group(g.group).accuracy),
                points(f.change.accuracy_by_group.get(g.group, 0.0) * 100),
                acc(f.student.group(g.group).macro_f1),
            ]
            for g in f.teacher.groups
        ]
        blocks += [
            f"Feature {f.feature}:",
            Table(
                ["group", "rows", "teacher accuracy", "student accuracy", "change", "student macro-F1"], rows
            ),
            Table(
                ["disparity", "teacher", "student", "change"],
                [
                    [
                        "worst-group accuracy",
                        f"{acc(f.teacher.worst_group_accuracy)} ({f.teacher.worst_group})",
                        f"{acc(f.student.worst_group_accuracy)} ({f.student.worst_group})",
                        f"{f.change.worst_group_accuracy:+.4f}",
                    ],
                    [
                        "accuracy gap",
                        acc(f.teacher.accuracy_gap),
                        acc(f.student.accuracy_gap),
                        f"{f.change.accuracy_gap:+.4f}",
                    ],
                    [
                        "demographic parity difference",
                        acc(f.teacher.demographic_parity_difference),
                        acc(f.student.demographic_parity_difference),
                        f"{f.change.demographic_parity_difference:+.4f}",
                    ],
                    [
                        "equalized odds difference",
                        acc(f.teacher.equalized_odds_difference),
                        acc(f.student.equalized_odds_difference),
                        f"{f.change.equalized_odds_difference:+.4f}",
                    ],
                ],
            ),
            f"Largest accuracy drop of one group: {f.change.largest_group_drop * 100:.2f} points "
            f"({f.change.largest_drop_group}).",
        ]
    return Section("Metrics by slice (fairness)", blocks)


def _candidate_row(c: Candidate, chosen: str) -> list[str]:
    status = "chosen" if c.format == chosen else ("eligible" if c.eligible else f"dropped: {c.note}")
    e = c.evaluation
    if e is None:
        return [c.format, "-", "-", "-", "-", "-", f"not measured: {c.note}"]
    gain = -(c.accuracy_drop_points or 0.0) or 0.0  # no -0.00
    return [
        c.format,
        f"{e.params:,}",
        kib(e.size_bytes),
        acc(e.accuracy),
        points(gain),
        per_s(e.throughput_ips_b64),
        status,
    ]


def _compression(card: ModelCard) -> Section:
    c = card.compression
    if c is None:
        return Section("Compression", [f"{NOT_COMPUTED}: no format selection report was given."])
    teacher = card.metrics.teacher
    pruning = (
        f"Pruning ({c.pruning.method}, ratio {c.pruning.ratio:.2f}): params {c.pruning.params_before:,} -> "
        f"{c.pruning.params_after:,}, MACs {c.pruning.macs_before:,} -> {c.pruning.macs_after:,}; validation "
        f"accuracy {acc(c.pruning.val_accuracy_before)} before, {acc(c.pruning.val_accuracy_pruned)} pruned, "
        f"{acc(c.pruning.val_accuracy_finetuned)} after {c.pruning.finetune_epochs} fine-tuning epochs."
        if c.pruning
        else f"The served format ({c.chosen}) is not pruned."
    )
    return Section(
        "Compression",
        [
            f"Teacher {c.teacher_architecture or 'architecture not recorded'} -> student {c.student_architecture} "
            f"-> {c.chosen}" + (" (the floor: no other candidate was eligible)" if c.floor else "") + ".",
            Table(
                ["vs teacher", "ratio"],
                [
                    ["parameters (teacher / student)", ratio(c.params_ratio)],
                    ["size (teacher / student)", ratio(c.size_ratio)],
                    ["throughput b64 (student / teacher)", ratio(c.throughput_ratio)],
                    ["p99 latency b1 (student / teacher)", ratio(c.latency_p99_ratio)],
                ],
            ),
            pruning,
            f"Candidates (accuracy budget {c.budget_points:.2f} points against the source's "
            f"{acc(c.reference_accuracy)}; the teacher: {teacher.params:,} params, {kib(teacher.size_bytes)}, "
            f"{per_s(teacher.throughput_ips_b64)}):",
            Table(
                ["format", "params", "size", "accuracy", "vs source", "throughput b64", "status"],
                [_candidate_row(x, c.chosen) for x in c.candidates],
            ),
            *c.reasons[:1],
        ],
    )


def _explanation(card: ModelCard) -> Section:
    e = card.explanation
    if not e.enabled:
        return Section("Explanations", [f"{NOT_COMPUTED}: {e.reason or 'explain.enabled is false'}."])
    blocks: list[Block] = [
        f"Methods {', '.join(e.methods)} on {e.samples:,} test rows; teacher and student compared with "
        f"{e.compared_method}: mean rank correlation "
        + (corr(e.mean_rank_correlation) if e.mean_rank_correlation is not None else NOT_COMPUTED)
        + (f" ({e.reason})" if e.reason else "")
        + ".",
    ]
    if e.rank_correlation_by_class:
        blocks.append(
            Table(
                ["class", "rank correlation (teacher vs student)"],
                [[k, corr(v)] for k, v in e.rank_correlation_by_class.items()],
            )
        )
    if e.sanity:
        blocks += [
            "Sanity check (Adebayo et al. 2018): a weight-randomized copy must attribute differently.",
            Table(
                ["model", "passed", "rank correlation with the randomized model", "threshold"],
                [
                    [m, "yes" if s.passed else "NO", corr(s.rank_correlation), corr(s.threshold)]
                    for m, s in e.sanity.items()
                ],
            ),
        ]
    if e.cost_ms_per_image:
        rows = [[m, method, ms(v)] for m, costs in e.cost_ms_per_image.items() for method, v in costs.items()]
        blocks.append(Table(["model", "method", "cost per image"], rows))
    if e.figures:
        blocks.append(f"Figures (in the run's MLflow artifacts under explain/): {', '.join(e.figures)}.")
    return Section("Explanations", blocks)


def _gate(card: ModelCard) -> Section:
    g = card.gate
    blocks: list[Block] = [
        f"Decision: {'passed' if g.passed else 'REJECTED'}"
        + (f" (champion v{g.champion_version})" if g.champion_version else " (no champion yet)")
        + ".",
        Table(
            ["check", "passed", "value", "threshold", "message"],
            [
                [c.name, "yes" if c.passed else "NO", f"{c.value:.4f}", f"{c.threshold:.4f}", c.message]
                for c in g.checks
            ],
        ),
    ]
    if g.candidate_accuracy:
        rows = [
            [split, acc(a), acc(g.champion_accuracy[split]) if split in g.champion_accuracy else "-"]
            for split, a in g.candidate_accuracy.items()
        ]
        blocks.append(Table(["split", "candidate accuracy", "champion accuracy"], rows))
    blocks += ["Reasons:", Items(g.reasons)]
    return Section("Gate decision", blocks)


def _serving(card: ModelCard) -> Section:
    s = card.serving
    batching = (
        f"dynamic batching (preferred {s.preferred_batch_sizes}, max queue delay {s.max_queue_delay_us} us)"
        if s.dynamic_batching
        else "no dynamic batching"
    )
    return Section(
        "Serving",
        [
            f"Triton model {card.details.name} version {card.details.version}: {s.format} in {s.runtime}, "
            f"{card.details.served_file}, max batch {s.max_batch_size}, {batching}, "
            f"{s.instance_count} x {s.instance_kind}. The PyTorch checkpoint is packaged beside it (explain/model.pt) "
            "for explanations.",
            Table(
                ["measured on CPU", "value"],
                [
                    ["p50 latency, batch 1", ms(s.latency_ms_p50_b1)],
                    ["p99 latency, batch 1", ms(s.latency_ms_p99_b1)],
                    ["throughput, batch 64", per_s(s.throughput_ips_b64)],
                    ["threads", str(s.threads) if s.threads else "all cores"],
                ],
            ),
        ],
    )


def _limitations(card: ModelCard) -> Section:
    return Section("Limitations and caveats", [card.use.limitations])


def sections(card: ModelCard) -> list[Section]:
    """Mitchell et al.'s order: details, intended use, data, metrics, analyses by slice, then ours, then caveats."""
    return [
        _details(card),
        _use(card),
        _data(card),
        _metrics(card),
        _slices(card),
        _compression(card),
        _explanation(card),
        _gate(card),
        _serving(card),
        _limitations(card),
    ]


def title(card: ModelCard) -> str:
    return f"Model card: {card.details.name} v{card.details.version}"


def _md_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def to_markdown(card: ModelCard) -> str:
    out = [f"# {title(card)}", ""]
    for section in sections(card):
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                out.append("| " + " | ".join(map(_md_cell, block.header)) + " |")
                out.append("|" + " --- |" * len(block.header))
                out += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]
            elif isinstance(block, Items):
                out += [f"- {' '.join(item.split())}" for item in block.items]
            else:
                out.append(block)
            out.append("")
    return "\n".join(out)


_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}"
)


def to_html(card: ModelCard) -> str:
    """A standalone page; every value goes through html.escape (user text and file names included)."""
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title(card))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(title(card))}</h1>",
    ]
    for section in sections(card):
        out.append(f"<h2>{e(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Table):
                out.append(
                    "<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in block.header) + "</tr></thead>"
                )
                out.append("<tbody>")
                out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in block.rows]
                out.append("</tbody></table>")
            elif isinstance(block, Items):
                out.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in block.items) + "</ul>")
            else:
                out.append(f"<p>{e(block)}</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_card(card: ModelCard, folder: Path) -> dict[str, Path]:
    """Write the JSON, Markdown and HTML files into `folder`; returns kind -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = {
        "json": json.dumps(card.model_dump(mode="json"), indent=2) + "\n",
        "markdown": to_markdown(card),
        "html": to_html(card),
    }
    paths = {kind: folder / CARD_FILES[kind] for kind in texts}
    for kind, text in texts.items():
        paths[kind].write_text(text, encoding="utf-8")
    return paths

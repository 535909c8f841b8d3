"""The compression search: the smallest student that stays within an accuracy budget against its teacher.

Candidates are student architectures (the zoo's `student_cnn` `width` x `stages`, or any factory with those
parameters) ordered from small to large by multiply-accumulates. Each is distilled from the teacher, measured
on the validation split (never test) in ONNX Runtime, and the search stops at the first one whose accuracy
drop against the teacher is within `compress.search.accuracy_budget_points`: the smallest, hence fastest,
candidate that is good enough. Pruning and the format are chosen afterwards on the found student, by the
pipeline's prune and select steps (the budget leaves room for them).

Warm start: a candidate is initialised from the previous one where layers match by name and type. Wider
layers get the narrower weights in their leading channels and zeros for the inputs that come from the new
channels, so a wider model starts out computing exactly what the narrower one learnt (a function-preserving
widening, as in Net2Net); layers the smaller model lacks (a deeper stage) start fresh.

Bookkeeping is an Optuna study in `study_dir` (SQLite): trials are asked in our order (a fixed order over a
handful of candidates, so no sampler picks them), each completed trial keeps its numbers and its model file,
and a rerun over the same folder reuses every completed trial instead of training it again.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from rich.console import Console
from torch import nn

from slipway.compression import tradeoff
from slipway.compression.onnx_export import export_onnx
from slipway.compression.pruning import count_macs
from slipway.core.config import DistillConfig, EvaluateConfig, ModelSpec, SearchConfig
from slipway.core.errors import ConfigError
from slipway.core.models import build_model, count_parameters, load_model, resolve_factory, save_model
from slipway.evaluation.evaluate import evaluate_model, onnx_predictor
from slipway.training.loop import TrainResult, accuracy, train

log = logging.getLogger(__name__)
OBJECTIVE = "accuracy_margin_points"  # budget minus drop: >= 0 is within budget (also Katib's objective)
STUDY_NAME = "slipway-search"
STUDY_FILE = "study.db"
SEARCHED = ("width", "stages")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One student architecture the search may distil; `macs` and `params` order the candidates."""

    width: int
    stages: int
    params: int = 0
    macs: int = 0

    @property
    def key(self) -> str:
        return f"w{self.width}-s{self.stages}"

    def spec(self, base: ModelSpec) -> ModelSpec:
        return base.model_copy(update={"kwargs": {**base.kwargs, "width": self.width, "stages": self.stages}})


class TrialResult(BaseModel):
    """One distilled candidate: what it costs and how good it is (validation split, ONNX Runtime FP32)."""

    key: str
    width: int
    stages: int
    params: int
    macs: int
    size_bytes: int
    val_accuracy: float
    drop_points: float
    within_budget: bool
    throughput_ips_b64: float
    latency_ms_p99_b1: float
    seconds: float
    warm_start_from: str | None = None
    resumed: bool = False
    training: dict[str, Any] = {}


class SearchReport(BaseModel):
    """Every candidate, the Pareto front (accuracy vs throughput) and why the chosen one won."""

    teacher_val_accuracy: float
    budget_points: float
    time_budget_s: float
    max_trials: int
    trials: list[TrialResult]
    not_run: dict[str, str]
    chosen: str
    stop_reason: str
    pareto: list[str]
    reasons: list[str]
    seconds: float

    def trial(self, key: str) -> TrialResult:
        return next(t for t in self.trials if t.key == key)


def unsearchable(base: ModelSpec) -> str | None:
    """Why the student's factory cannot be searched (it lacks a searched parameter), or None."""
    params = inspect.signature(resolve_factory(base.architecture)).parameters
    missing = [name for name in SEARCHED if name not in params]
    if not missing:
        return None
    return (
        f"student.architecture {base.architecture!r} has no parameter {', '.join(repr(m) for m in missing)} "
        "to search (student_cnn, or a factory taking width and stages, has)"
    )


def check_searchable(base: ModelSpec) -> None:
    if (why := unsearchable(base)) is not None:
        raise ConfigError(f"compress.search: {why}; set compress.search.enabled=false")


def plan(cfg: SearchConfig, base: ModelSpec, input_shape: Sequence[int], num_classes: int) -> list[Candidate]:
    """Every (width, stages) pair, ordered from small to large by MACs (then parameters)."""
    check_searchable(base)
    out = []
    for width in sorted(set(cfg.widths)):
        for stages in sorted(set(cfg.stages)):
            c = Candidate(width, stages)
            model = build_model(c.spec(base), input_shape, num_classes)
            out.append(
                dataclasses.replace(c, params=count_parameters(model), macs=count_macs(model, input_shape))
            )
    return sorted(out, key=lambda c: (c.macs, c.params, c.key))


@torch.no_grad()
def warm_start(model: nn.Module, previous: nn.Module) -> list[str]:
    """Copy `previous`'s weights into `model` where modules match by name and type; returns those names.

    Each tensor gets the overlapping leading slice; in a weight's input dimension (dim 1 of a conv or linear)
    the channels `previous` did not have are zeroed, so a same-depth wider model computes what `previous` did.
    """
    old = dict(previous.named_modules())
    copied = []
    for name, module in model.named_modules():
        src = old.get(name)
        if not name or src is None or type(src) is not type(module):
            continue
        tensors = {
            **dict(module.named_parameters(recurse=False)),
            **dict(module.named_buffers(recurse=False)),
        }
        src_tensors = {**dict(src.named_parameters(recurse=False)), **dict(src.named_buffers(recurse=False))}
        touched = False
        for tname, dst in tensors.items():
            value = src_tensors.get(tname)
            if value is None or value.dim() != dst.dim():
                continue
            if value.dim() == 0:
                dst.copy_(value)
                continue
            if isinstance(module, nn.modules.conv._ConvNd | nn.Linear) and tname == "weight":
                dst[:, value.shape[1] :] = 0  # inputs from channels `previous` lacked: no effect at first
            overlap = tuple(slice(0, min(a, b)) for a, b in zip(dst.shape, value.shape, strict=True))
            dst[overlap] = value[overlap]
            touched = True
        if touched:
            copied.append(name)
    return copied


def point_of(trial: TrialResult) -> tradeoff.Point:
    """The trial on the trade-off plot: green within the budget, red over it."""
    colour = "tab:green" if trial.within_budget else "tab:red"
    return tradeoff.Point(trial.key, trial.val_accuracy, trial.throughput_ips_b64, trial.size_bytes, colour)


def pareto_front(trials: Sequence[TrialResult]) -> list[str]:
    """Keys of the trials no other trial beats on both validation accuracy and throughput, fastest first."""
    return tradeoff.pareto_front([point_of(t) for t in trials])


def distill_candidate(
    candidate: Candidate,
    base: ModelSpec,
    teacher: nn.Module,
    splits_xy: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    input_shape: Sequence[int],
    num_classes: int,
    distill: DistillConfig,
    seed: int,
    folder: Path,
    previous: nn.Module | None = None,
) -> tuple[nn.Module, TrainResult, list[str]]:
    """Build, warm-start (from `previous`, when given) and distil one candidate; resumes from `folder`."""
    x_train, y_train, x_val, y_val = splits_xy
    torch.manual_seed(seed)
    model = build_model(candidate.spec(base), input_shape, num_classes)
    copied = warm_start(model, previous) if previous is not None else []
    result = train(
        model, x_train, y_train, x_val, y_val, distill, seed, folder / "checkpoints", teacher=teacher,
        label=f"search {candidate.key}",
    )  # fmt: skip
    return model, result, copied


def measure_candidate(
    candidate: Candidate,
    model: nn.Module,
    spec: ModelSpec,
    input_shape: Sequence[int],
    num_classes: int,
    x_val: np.ndarray,
    y_val: np.ndarray,
    teacher_val_accuracy: float,
    budget_points: float,
    evaluate: EvaluateConfig,
    opset: int,
    folder: Path,
) -> dict[str, Any]:
    """Save and export the model, then its validation accuracy and speed in ONNX Runtime (the shipping runtime)."""
    save_model(model, spec, input_shape, num_classes, folder / "model.pt")
    onnx_path = folder / "model.onnx"
    export_onnx(model, input_shape, onnx_path, opset)
    ev = evaluate_model(
        "student", "onnx-fp32", "onnxruntime", onnx_predictor(onnx_path, evaluate.threads), x_val, y_val,
        num_classes, candidate.params, onnx_path.stat().st_size, evaluate,
    )  # fmt: skip
    drop = (teacher_val_accuracy - ev.accuracy) * 100
    return {
        "key": candidate.key,
        "width": candidate.width,
        "stages": candidate.stages,
        "params": candidate.params,
        "macs": candidate.macs,
        "size_bytes": ev.size_bytes,
        "val_accuracy": ev.accuracy,
        "drop_points": drop,
        "within_budget": drop <= budget_points + 1e-9,
        "throughput_ips_b64": ev.throughput_ips_b64,
        "latency_ms_p99_b1": ev.latency_ms_p99_b1,
    }


def _open_study(study_dir: Path) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=f"sqlite:///{study_dir / STUDY_FILE}",
        direction="maximize",
        load_if_exists=True,
    )
    # A trial left running by a killed process cannot finish: mark it failed (its training checkpoint stays,
    # so the candidate resumes where it stopped).
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return study


def _completed(study: Any, study_dir: Path) -> dict[str, TrialResult]:
    """Finished trials whose model file is still there, by candidate key."""
    import optuna

    done: dict[str, TrialResult] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        raw = t.user_attrs.get("result")
        if raw and (study_dir / "trials" / raw["key"] / "model.pt").is_file():
            done[raw["key"]] = TrialResult.model_validate(raw)
    return done


def _tell(study: Any, candidate: Candidate, keys: list[str], result: TrialResult, budget: float) -> None:
    """Record a finished candidate as a trial with its params, objective value and numbers."""
    import optuna

    study.enqueue_trial({"candidate": candidate.key})
    trial = study.ask({"candidate": optuna.distributions.CategoricalDistribution(keys)})
    if trial.params["candidate"] != candidate.key:  # another process enqueued: never mix two searches
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise ConfigError(f"compress.search: study {study.study_name} is being used by another search")
    trial.set_user_attr("result", result.model_dump(mode="json"))
    study.tell(trial, budget - result.drop_points)


def _report(
    trials: list[TrialResult],
    not_run: dict[str, str],
    chosen: TrialResult,
    head: str,
    stop: str,
    teacher_acc: float,
    cfg: SearchConfig,
    seconds: float,
) -> SearchReport:
    """Why the chosen one won, and what every other candidate measured (or why it was not run)."""
    reasons = [
        f"{head}; {chosen.throughput_ips_b64:,.0f} img/s at batch 64, {chosen.size_bytes / 1024:.1f} KiB, "
        f"{chosen.params:,} parameters"
    ]
    for t in trials:
        if t is chosen:
            continue
        verdict = "within budget" if t.within_budget else f"over budget (drop {t.drop_points:.2f} points)"
        reasons.append(
            f"{t.key}: {verdict}, val accuracy {t.val_accuracy:.4f}, {t.throughput_ips_b64:,.0f} img/s "
            f"({t.throughput_ips_b64 / chosen.throughput_ips_b64:.2f}x the chosen)"
        )
    reasons += [f"{key}: not run ({why})" for key, why in not_run.items()]
    return SearchReport(
        teacher_val_accuracy=teacher_acc,
        budget_points=cfg.accuracy_budget_points,
        time_budget_s=cfg.time_budget_s,
        max_trials=cfg.max_trials,
        trials=trials,
        not_run=not_run,
        chosen=chosen.key,
        stop_reason=stop,
        pareto=pareto_front(trials),
        reasons=reasons,
        seconds=seconds,
    )


def run_search(
    teacher: nn.Module,
    splits_xy: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    input_shape: Sequence[int],
    num_classes: int,
    base: ModelSpec,
    cfg: SearchConfig,
    distill: DistillConfig,
    evaluate: EvaluateConfig,
    opset: int,
    seed: int,
    study_dir: Path,
    clock: Callable[[], float] = time.monotonic,
    console: Console | None = None,
) -> tuple[SearchReport, Path]:
    """Distil candidates from small to large until one is within budget; returns the report and its model file.

    The time budget is checked before each trial (the first always runs): a trial that would start after it,
    or that the previous trial's duration says cannot finish within it, is not started, and the best trial so
    far (highest validation accuracy) is kept with the reason. `max_trials` caps the trials run in one call.
    """
    console = console or Console(stderr=True)
    _, _, x_val, y_val = splits_xy
    teacher_acc = accuracy(teacher, x_val, y_val)
    candidates = plan(cfg, base, input_shape, num_classes)
    keys = [c.key for c in candidates]
    budget = cfg.accuracy_budget_points
    study = _open_study(study_dir)
    done = _completed(study, study_dir)
    console.print(
        f"[bold]search[/bold]: {len(candidates)} candidates ({', '.join(keys)}), teacher val accuracy "
        f"{teacher_acc:.4f}, budget {budget:.2f} points, time budget {cfg.time_budget_s:.0f} s"
        + (f", {len(done)} done before (resumed)" if done else "")
    )
    start = clock()
    trials: list[TrialResult] = []
    not_run: dict[str, str] = {}
    previous: nn.Module | None = None
    previous_key: str | None = None
    stop_reason = ""
    last_seconds = 0.0
    ran = 0
    for i, candidate in enumerate(candidates):
        folder = study_dir / "trials" / candidate.key
        if stop_reason:
            not_run[candidate.key] = stop_reason
            continue
        if candidate.key in done:
            result = done[candidate.key].model_copy(update={"resumed": True})
        else:
            elapsed = clock() - start
            if ran and ran >= cfg.max_trials:
                stop_reason = f"max_trials ({cfg.max_trials}) reached"
            elif (ran or trials) and elapsed + last_seconds > cfg.time_budget_s:
                stop_reason = (
                    f"time budget {cfg.time_budget_s:.0f} s: {elapsed:.0f} s spent, and the last trial took "
                    f"{last_seconds:.0f} s"
                )
            if stop_reason:
                not_run[candidate.key] = stop_reason
                continue
            t0 = clock()
            model, trained, copied = distill_candidate(
                candidate, base, teacher, splits_xy, input_shape, num_classes, distill, seed, folder,
                previous if cfg.warm_start else None,
            )  # fmt: skip
            numbers = measure_candidate(
                candidate, model, candidate.spec(base), input_shape, num_classes, x_val, y_val, teacher_acc,
                budget, evaluate, opset, folder,
            )  # fmt: skip
            last_seconds = clock() - t0
            ran += 1
            result = TrialResult(
                **numbers,
                seconds=last_seconds,
                warm_start_from=previous_key if copied else None,
                training=dataclasses.asdict(trained),
            )
            _tell(study, candidate, keys, result, budget)
        trials.append(result)
        console.print(
            f"search {i + 1}/{len(candidates)} {candidate.key}: val {result.val_accuracy:.4f} "
            f"(drop {result.drop_points:.2f} points, budget {budget:.2f}), "
            f"{result.throughput_ips_b64:,.0f} img/s, {result.size_bytes / 1024:.1f} KiB, "
            f"{result.seconds:.0f} s"
            + (" (resumed)" if result.resumed else "")
            + (" -> within budget, stop" if result.within_budget else "")
        )
        if result.within_budget:
            stop_reason = f"a smaller candidate ({candidate.key}) is within budget"
            continue
        previous, previous_key = load_model(folder / "model.pt")[0], candidate.key
    within = [t for t in trials if t.within_budget]
    if within:
        chosen = within[0]
        head = (
            f"chose {chosen.key}: the smallest candidate within budget (val accuracy {chosen.val_accuracy:.4f}, "
            f"drop {chosen.drop_points:.2f} <= {budget:.2f} points vs teacher {teacher_acc:.4f})"
        )
        stop = "found a candidate within budget"
    else:
        chosen = max(trials, key=lambda t: (t.val_accuracy, t.throughput_ips_b64))
        stop = stop_reason or "every candidate was tried"
        head = (
            f"chose {chosen.key}: no candidate tried is within budget ({stop}); kept the most accurate "
            f"(val accuracy {chosen.val_accuracy:.4f}, drop {chosen.drop_points:.2f} > {budget:.2f} points)"
        )
    report = _report(trials, not_run, chosen, head, stop, teacher_acc, cfg, clock() - start)
    return report, study_dir / "trials" / chosen.key / "model.pt"

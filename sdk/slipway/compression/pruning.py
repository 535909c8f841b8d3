"""Pruning: structured (whole channels, with torch-pruning's dependency graph) or unstructured (magnitude).

Structured pruning physically removes channels, so the model gets fewer parameters, fewer FLOPs and a
smaller ONNX file; torch-pruning traces the model once and prunes every coupled layer together (a conv's
output channels, its BatchNorm, the next conv's inputs, concatenations and residual adds), which hand-made
graph surgery gets wrong as soon as the architecture is not a plain chain. Accuracy is then recovered by
distillation from the teacher with `slipway.training.loop.train`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from slipway.core.config import FinetuneConfig, PruneConfig
from slipway.core.errors import ModelError
from slipway.core.models import count_parameters
from slipway.training.loop import accuracy, train

log = logging.getLogger(__name__)
PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)


class PruneTrial(BaseModel):
    """One ratio tried by the prune step's search (compress.prune.ratios)."""

    ratio: float
    params_after: int
    val_accuracy_finetuned: float
    drop_points: float  # unpruned student's validation accuracy minus this one's, in points
    within_budget: bool


class PruneReport(BaseModel):
    """What pruning did and what it cost, before and after fine-tuning; with a ratio search, every ratio tried
    (largest first) and why the kept one was kept."""

    method: str
    ratio: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    sparsity: float
    channels: dict[str, list[int]]
    val_accuracy_before: float
    val_accuracy_pruned: float
    val_accuracy_finetuned: float
    finetune_epochs: int
    search: list[PruneTrial] = []
    reason: str = ""


def _example(input_shape: Sequence[int]) -> torch.Tensor:
    return torch.randn(1, *input_shape)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (torch-pruning's op counter)."""
    import torch_pruning as tp

    macs, _ = tp.utils.count_ops_and_params(model.eval(), _example(input_shape))
    return int(macs)


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over all conv and linear layers."""
    zeros = total = 0
    for module in model.modules():
        if isinstance(module, PRUNABLE):
            weight = module.weight.detach()
            zeros += int((weight == 0).sum())
            total += weight.numel()
    return zeros / total if total else 0.0


def classifier_layers(model: nn.Module, input_shape: Sequence[int], num_classes: int) -> list[nn.Module]:
    """The layer(s) that produce the logits: their output dim is the class count and must not be pruned."""
    layers = [m for m in model.modules() if isinstance(m, PRUNABLE)]
    if not layers:
        raise ModelError(f"{type(model).__name__} has no conv or linear layer to prune")
    last = layers[-1]
    out_dim = last.out_features if isinstance(last, nn.Linear) else last.out_channels
    if out_dim != num_classes:
        raise ModelError(
            f"the last conv/linear layer of {type(model).__name__} has {out_dim} outputs, not {num_classes} "
            "classes: cannot tell which layer is the classifier"
        )
    return [last]


def _channels(model: nn.Module) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            out[name] = module.out_channels
        elif isinstance(module, nn.Linear):
            out[name] = module.out_features
    return out


def _importance(kind: str):
    import torch_pruning as tp

    if kind == "bn_scale":
        return tp.importance.BNScaleImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if kind == "l1" else 2)


def structured_prune(
    model: nn.Module, input_shape: Sequence[int], num_classes: int, cfg: PruneConfig
) -> dict[str, list[int]]:
    """Remove `cfg.ratio` of the channels in place (dependency-aware); returns {layer: [before, after]}."""
    import torch_pruning as tp

    before = _channels(model)
    model.eval()
    pruner = tp.pruner.BasePruner(
        model,
        _example(input_shape),
        importance=_importance(cfg.importance),
        pruning_ratio=cfg.ratio,
        iterative_steps=cfg.iterative_steps,
        ignored_layers=classifier_layers(model, input_shape, num_classes),
        round_to=cfg.round_to,
    )
    for _ in range(cfg.iterative_steps):
        pruner.step()
    with torch.inference_mode():
        out = model(_example(input_shape))
    if tuple(out.shape) != (1, num_classes):
        raise ModelError(
            f"pruning changed the output shape to {tuple(out.shape)}; expected (1, {num_classes})"
        )
    after = _channels(model)
    return {name: [before[name], after.get(name, 0)] for name in before}


def unstructured_prune(model: nn.Module, ratio: float) -> None:
    """Zero the globally smallest `ratio` of conv/linear weights; the masks stay attached (see `finalize`)."""
    from torch.nn.utils import prune

    params = [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=ratio)


def finalize_unstructured(model: nn.Module) -> None:
    """Fold the pruning masks into the weights so that the zeros are plain values in the state dict."""
    from torch.nn.utils import prune

    for module in model.modules():
        if isinstance(module, PRUNABLE) and prune.is_pruned(module):
            prune.remove(module, "weight")


def prune_and_finetune(
    student: nn.Module,
    teacher: nn.Module | None,
    splits_xy: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    input_shape: Sequence[int],
    num_classes: int,
    cfg: PruneConfig,
    seed: int,
    checkpoint_dir: str | Path,
    finetune: FinetuneConfig | None = None,
) -> tuple[nn.Module, PruneReport]:
    """Prune a copy of `student`, then fine-tune it by distillation from `teacher` (plain training if None).

    `splits_xy` is (x_train, y_train, x_val, y_val); `finetune` replaces `cfg.finetune` (the prune step passes
    it with its resolved checkpoint folder). The input model is left untouched.
    """
    x_train, y_train, x_val, y_val = splits_xy
    model = copy.deepcopy(student).eval()
    params_before = count_parameters(model)
    macs_before = count_macs(model, input_shape)
    acc_before = accuracy(model, x_val, y_val)
    channels: dict[str, list[int]] = {}
    if cfg.method == "structured":
        channels = structured_prune(model, input_shape, num_classes, cfg)
    elif cfg.method == "unstructured":
        unstructured_prune(model, cfg.ratio)
    acc_pruned = accuracy(model, x_val, y_val)
    log.info(
        "pruned (%s, ratio %.2f): val accuracy %.4f -> %.4f", cfg.method, cfg.ratio, acc_before, acc_pruned
    )
    epochs = 0
    if cfg.method != "none":
        ft = finetune or cfg.finetune
        result = train(
            model,
            x_train,
            y_train,
            x_val,
            y_val,
            ft,
            seed,
            checkpoint_dir,
            teacher=teacher,
            label="finetune-pruned",
        )
        epochs = result.epochs_run
    if cfg.method == "unstructured":
        finalize_unstructured(model)
    model.eval()
    report = PruneReport(
        method=cfg.method,
        ratio=cfg.ratio if cfg.method != "none" else 0.0,
        params_before=params_before,
        params_after=count_parameters(model),
        macs_before=macs_before,
        macs_after=count_macs(model, input_shape),
        sparsity=weight_sparsity(model),
        channels=channels,
        val_accuracy_before=acc_before,
        val_accuracy_pruned=acc_pruned,
        val_accuracy_finetuned=accuracy(model, x_val, y_val),
        finetune_epochs=epochs,
    )
    log.info(
        "pruning: params %d -> %d, MACs %d -> %d, sparsity %.3f, val accuracy after fine-tuning %.4f",
        report.params_before,
        report.params_after,
        report.macs_before,
        report.macs_after,
        report.sparsity,
        report.val_accuracy_finetuned,
    )
    return model, report

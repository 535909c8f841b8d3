"""Training and Hinton distillation: seeded, AdamW + cosine, early stopping, resumable checkpoints.

Every epoch reseeds from (seed, epoch), so a run resumed from its epoch-k checkpoint replays exactly the
epochs an uninterrupted run would have: same batches, same weights, same metrics.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from slipway.config import DistillConfig, TrainConfig
from slipway.errors import TrainingError

log = logging.getLogger(__name__)
CHECKPOINT = "last.pt"
EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    best_val_accuracy: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    resumed_from_epoch: int | None
    history: list[dict[str, float]] = field(default_factory=list)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton et al. (2015): alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)."""
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * soft + (1 - alpha) * hard


@torch.inference_mode()
def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    xt = torch.as_tensor(x, dtype=torch.float32)
    return torch.cat([model(xt[i : i + batch_size]) for i in range(0, len(xt), batch_size)])


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict_logits(model, x).argmax(1).numpy() == y).mean())


def accuracy_and_loss(model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    logits = predict_logits(model, x)
    labels = torch.as_tensor(y, dtype=torch.int64)
    return float((logits.argmax(1) == labels).float().mean()), float(F.cross_entropy(logits, labels))


def _save_atomic(state: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a torn file from a crash: start over rather than fail
        log.warning("ignoring unreadable checkpoint %s: %s", path, err)
        return None


def train(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cfg: TrainConfig,
    seed: int,
    checkpoint_dir: str | Path,
    teacher: nn.Module | None = None,
    on_epoch: EpochCallback | None = None,
    label: str = "train",
) -> TrainResult:
    """Train `model` in place (best-val weights restored at the end); distil from `teacher` when given."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = checkpoint_dir / CHECKPOINT
    distill = isinstance(cfg, DistillConfig) and teacher is not None

    torch.manual_seed(seed)
    xt = torch.as_tensor(x_train, dtype=torch.float32)
    yt = torch.as_tensor(y_train, dtype=torch.int64)
    # The teacher is frozen and sees no augmentation: its logits are computed once, not every batch.
    teacher_logits = predict_logits(teacher, xt) if distill and teacher is not None else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)

    # "Better" is higher val accuracy, ties broken by lower val loss: small val sets saturate accuracy.
    start_epoch, best_acc, best_loss, best_epoch, stale = 0, -1.0, math.inf, -1, 0
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    resumed_from = None
    if (state := _load_checkpoint(ckpt_path)) is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        best_state = state["best_state"]
        start_epoch, best_acc, best_loss = state["epoch"], state["best_acc"], state["best_loss"]
        best_epoch, stale = state["best_epoch"], state["stale"]
        history = state["history"]
        resumed_from = start_epoch
        log.info("%s: resuming from checkpoint after epoch %d", label, start_epoch)

    stopped_early = stale >= cfg.patience
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(label, total=cfg.epochs, completed=start_epoch, status="")
        for epoch in range(start_epoch, cfg.epochs):
            if stopped_early:
                break
            torch.manual_seed(seed * 100_003 + epoch)
            model.train()
            order = torch.randperm(len(xt))
            total, batches = 0.0, 0
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                logits = model(xt[idx])
                if teacher_logits is not None and isinstance(cfg, DistillConfig):
                    loss = distillation_loss(logits, teacher_logits[idx], yt[idx], cfg.temperature, cfg.alpha)
                else:
                    loss = F.cross_entropy(logits, yt[idx], label_smoothing=cfg.label_smoothing)
                if not math.isfinite(loss.item()):
                    raise TrainingError(
                        f"{label}: loss became {loss.item()} at epoch {epoch + 1}, batch {batches + 1}; "
                        f"lower the learning rate (now {cfg.lr}) or check the data for extreme values"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item()
                batches += 1
            scheduler.step()
            val_acc, val_loss = accuracy_and_loss(model, x_val, y_val)
            metrics = {
                "epoch": epoch + 1,
                "loss": total / max(batches, 1),
                "val_accuracy": val_acc,
                "val_loss": val_loss,
                "lr": scheduler.get_last_lr()[0],
            }
            history.append(metrics)
            if (val_acc, -val_loss) > (best_acc, -best_loss):
                best_acc, best_loss, best_epoch, stale = val_acc, val_loss, epoch + 1, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            stopped_early = stale >= cfg.patience
            _save_atomic(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "best_state": best_state,
                    "epoch": epoch + 1,
                    "best_acc": best_acc,
                    "best_loss": best_loss,
                    "best_epoch": best_epoch,
                    "stale": stale,
                    "history": history,
                },
                ckpt_path,
            )
            if on_epoch is not None:
                on_epoch(epoch + 1, metrics)
            log.info("%s epoch %d: loss %.4f val_accuracy %.4f", label, epoch + 1, metrics["loss"], val_acc)
            progress.update(task, completed=epoch + 1, status=f"loss {metrics['loss']:.3f} val {val_acc:.3f}")

    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(best_acc, best_epoch, len(history), stopped_early, resumed_from, history)

"""Training and Hinton distillation: seeded, AdamW + cosine, early stopping, resumable checkpoints.

Every epoch reseeds from (seed, epoch), so a run resumed from its epoch-k checkpoint replays exactly the
epochs an uninterrupted run would have: same batches, same weights, same metrics.

Data parallel (DDP) under torchrun with any world size: `batch_size` is the GLOBAL batch. Every rank draws the
same (seed, epoch) permutation and takes its slice of each global batch, and each rank's loss is weighted by
its share of that batch, so the averaged gradient is the one a single process would compute (up to BatchNorm
statistics and float summation order). Checkpoints hold the unwrapped model and no world-size state, so a
run resumes at a different world size (2 -> 1, 1 -> 2). Rank 0 alone evaluates, logs, checkpoints, calls
`on_epoch` and draws the progress bar; its validation metrics are broadcast so that every rank takes the
same early-stopping decisions. BatchNorm: SyncBatchNorm on CUDA (`sync_batchnorm`); gloo on CPU cannot
sync it, so each rank normalises over its own slice and rank 0's running statistics are broadcast after
every epoch (every rank then holds identical weights and buffers).
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from slipway.core.config import DistillConfig, FinetuneConfig, LoopConfig, TrainConfig
from slipway.core.errors import TrainingError
from slipway.training import distributed

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
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Hinton et al. (2015): alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels).

    `label_smoothing` smooths the hard labels of the CE term only: the teacher's targets are soft already.
    """
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    return alpha * temperature**2 * soft + (1 - alpha) * hard


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.inference_mode()
def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """FP32 logits on the CPU, computed batch by batch on whatever device the model lives on."""
    model.eval()
    xt = torch.as_tensor(x, dtype=torch.float32)
    device = _model_device(model)
    return torch.cat(
        [model(xt[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(xt), batch_size)]
    )


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


def _autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """bf16/fp16 autocast on CUDA; FP32 elsewhere (CPU autocast is slower than FP32 for these models)."""
    if device.type != "cuda" or precision == "fp32":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _convert_sync_batchnorm(model: nn.Module) -> dict[str, nn.Module]:
    """Swap BatchNorm layers for SyncBatchNorm in place; returns the originals so that they can go back.

    The SyncBatchNorm layers share the originals' parameters and buffers, so the originals see every update.
    """
    originals: dict[str, nn.Module] = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and name
    }
    if originals:
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return originals


def _restore_modules(model: nn.Module, originals: dict[str, nn.Module]) -> None:
    for name, module in originals.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module)


def _broadcast_buffers(model: nn.Module, env: distributed.DistEnv) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank."""
    if env.world_size > 1:
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer.data, src=0)


def _shard(idx: torch.Tensor, env: distributed.DistEnv) -> torch.Tensor:
    """This rank's slice of a global batch (strided, so the slices differ in size by at most one)."""
    return idx[env.rank :: env.world_size] if env.world_size > 1 else idx


def _global_mean(value: torch.Tensor, env: distributed.DistEnv) -> float:
    """Sum of a per-rank scalar over ranks divided by the world size, on every rank."""
    if env.world_size == 1:
        return float(value.item())
    reduced = value.detach().float().clone()
    torch.distributed.all_reduce(reduced)
    return float(reduced.item()) / env.world_size


def train(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cfg: LoopConfig,
    seed: int,
    checkpoint_dir: str | Path,
    teacher: nn.Module | None = None,
    on_epoch: EpochCallback | None = None,
    label: str = "train",
) -> TrainResult:
    """Train `model` in place (best-val weights restored at the end); distil from `teacher` when given.

    Runs as one process, or as every rank of an initialised process group (see the module docstring);
    the result is identical on every rank.
    """
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    env = distributed.current(cfg.device)
    device = env.device
    checkpoint_dir = Path(checkpoint_dir)
    ckpt_path = checkpoint_dir / CHECKPOINT
    if env.is_main:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    distill = isinstance(cfg, DistillConfig | FinetuneConfig) and teacher is not None

    torch.manual_seed(seed)
    model.to(device)
    xt = torch.as_tensor(x_train, dtype=torch.float32).to(device)
    yt = torch.as_tensor(y_train, dtype=torch.int64).to(device)
    # The teacher is frozen and sees no augmentation: its logits are computed once, not every batch.
    teacher_logits = None
    if distill and teacher is not None:
        teacher.to(device)
        teacher_logits = predict_logits(teacher, xt).to(device)
        teacher.cpu()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    use_scaler = device.type == "cuda" and cfg.precision == "fp16"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    if cfg.precision != "fp32" and device.type != "cuda" and env.is_main:
        log.warning("%s: precision %s needs CUDA; training in fp32 on %s", label, cfg.precision, device)

    # "Better" is higher val accuracy, ties broken by lower val loss: small val sets saturate accuracy.
    start_epoch, best_acc, best_loss, best_epoch, stale = 0, -1.0, math.inf, -1, 0
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    resumed_from = None
    # Rank 0 reads the checkpoint and hands it to the others: in a cluster only it may see the folder.
    state = distributed.broadcast_object(_load_checkpoint(ckpt_path) if env.is_main else None, env)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if use_scaler and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        best_state = state["best_state"]
        start_epoch, best_acc, best_loss = state["epoch"], state["best_acc"], state["best_loss"]
        best_epoch, stale = state["best_epoch"], state["stale"]
        history = state["history"]
        resumed_from = start_epoch
        if env.is_main:
            log.info(
                "%s: resuming from checkpoint after epoch %d (world size %d, checkpoint from world size %s)",
                label,
                start_epoch,
                env.world_size,
                state.get("world_size", 1),
            )

    sync_bn: dict[str, nn.Module] = {}
    net: nn.Module = model
    if env.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # A section without the key (fine-tuning, never under DDP today) gets TrainConfig's default.
        sync_wanted = cfg.sync_batchnorm if isinstance(cfg, TrainConfig) else True
        if sync_wanted and device.type == "cuda" and env.world_size > 1:
            sync_bn = _convert_sync_batchnorm(model)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    # Without SyncBatchNorm every rank's slice must hold two samples for BatchNorm; a world of one: two.
    min_batch = 2 if (sync_bn or env.world_size == 1) else 2 * env.world_size
    min_batch = max(min_batch, env.world_size)

    stopped_early = stale >= cfg.patience
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    try:
        with Progress(*columns, transient=False, disable=not env.is_main) as progress:
            task = progress.add_task(label, total=cfg.epochs, completed=start_epoch, status="")
            for epoch in range(start_epoch, cfg.epochs):
                if stopped_early:
                    break
                torch.manual_seed(seed * 100_003 + epoch)
                net.train()
                order = torch.randperm(len(xt)).to(device)
                total, batches = 0.0, 0
                for start in range(0, len(order), cfg.batch_size):
                    global_idx = order[start : start + cfg.batch_size]
                    if len(global_idx) < min_batch:  # BatchNorm needs two samples
                        continue
                    idx = _shard(global_idx, env)
                    with _autocast(device, cfg.precision):
                        logits = net(xt[idx])
                        if teacher_logits is not None and isinstance(cfg, DistillConfig | FinetuneConfig):
                            loss = distillation_loss(
                                logits.float(),
                                teacher_logits[idx],
                                yt[idx],
                                cfg.temperature,
                                cfg.alpha,
                                cfg.label_smoothing,
                            )
                        else:
                            loss = F.cross_entropy(
                                logits.float(), yt[idx], label_smoothing=cfg.label_smoothing
                            )
                    if env.world_size > 1:
                        # DDP averages gradients over ranks: weight each rank's mean by its batch share.
                        loss = loss * (len(idx) * env.world_size / len(global_idx))
                    batch_loss = _global_mean(loss, env)
                    if not math.isfinite(batch_loss):
                        raise TrainingError(
                            f"{label}: loss became {batch_loss} at epoch {epoch + 1}, batch {batches + 1}; "
                            f"lower the learning rate (now {cfg.lr}) or check the data for extreme values"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    total += batch_loss
                    batches += 1
                scheduler.step()
                if env.distributed and not sync_bn:
                    _broadcast_buffers(model, env)
                val_acc, val_loss = distributed.broadcast_object(
                    _evaluate(model, x_val, y_val) if env.is_main else None, env
                )
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
                    best_state = _cpu_state(model)
                else:
                    stale += 1
                stopped_early = stale >= cfg.patience
                if env.is_main:
                    _save_atomic(
                        {
                            "model": _cpu_state(model),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "scaler": scaler.state_dict() if use_scaler else {},
                            "best_state": best_state,
                            "epoch": epoch + 1,
                            "best_acc": best_acc,
                            "best_loss": best_loss,
                            "best_epoch": best_epoch,
                            "stale": stale,
                            "history": history,
                            "world_size": env.world_size,
                        },
                        ckpt_path,
                    )
                    if on_epoch is not None:
                        on_epoch(epoch + 1, metrics)
                    log.info(
                        "%s epoch %d: loss %.4f val_accuracy %.4f", label, epoch + 1, metrics["loss"], val_acc
                    )
                    progress.update(
                        task, completed=epoch + 1, status=f"loss {metrics['loss']:.3f} val {val_acc:.3f}"
                    )
    finally:
        _restore_modules(model, sync_bn)

    model.load_state_dict(best_state)
    model.cpu()
    model.eval()
    return TrainResult(best_acc, best_epoch, len(history), stopped_early, resumed_from, history)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the (unwrapped) model's state: what checkpoints hold, whatever the device."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Validation accuracy and loss of the unwrapped model (rank 0 only; the caller broadcasts them)."""
    was_training = model.training
    try:
        return accuracy_and_loss(model, x, y)
    finally:
        model.train(was_training)

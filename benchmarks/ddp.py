"""GPU throughput: the ResNet-50-sized teacher trained with DDP (1 GPU) + bf16 autocast, beside eager FP32.

`python -m benchmarks.ddp --device cuda` (or under `torchrun --nproc-per-node N` for N GPUs) prints one
JSON line per mode with training images/s. The "ResNet-50-sized teacher" is the zoo's `teacher_cnn` at width
432 on 3x32x32 inputs: 26.1 M parameters and 5.2 GMACs per image (ResNet-50 at 224x224: 25.6 M, 4.1 GMACs).
Synthetic data: this measures the training step, not I/O.
Without CUDA it exits with a clear message instead of timing a CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from contextlib import nullcontext
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from slipway.core.models import teacher_cnn
from slipway.training import distributed

log = logging.getLogger(__name__)


def resnet50_sized_teacher(input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 1000) -> nn.Module:
    """teacher_cnn at width 432: 26.1 M parameters, about the size and compute of ResNet-50."""
    return teacher_cnn(input_shape, num_classes, width=432)


def measure(
    model: nn.Module,
    device: torch.device,
    precision: str,
    batch_size: int,
    steps: int,
    warmup: int,
    env: distributed.DistEnv,
    use_ddp: bool,
) -> dict[str, Any]:
    """Images/s of forward + backward + AdamW step on synthetic data (per process, and over all ranks)."""
    model = model.to(device).train()
    net: nn.Module = model
    if use_ddp:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, *INPUT_SHAPE, device=device)
    y = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def step() -> None:
        with autocast():
            loss = F.cross_entropy(net(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    per_process = steps * batch_size / elapsed
    return {
        "mode": f"{'ddp' if use_ddp else 'eager'}-{precision}",
        "world_size": env.world_size,
        "batch_size_per_process": batch_size,
        "images_per_s": round(per_process * env.world_size, 1),
        "step_ms": round(1000 * elapsed / steps, 2),
        "params": sum(p.numel() for p in model.parameters()),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }


INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 1000
SINGLE_PROCESS_GROUP_ENV = {
    "RANK": "0",
    "WORLD_SIZE": "1",
    "LOCAL_RANK": "0",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29533",
}


def run_modes(
    device: Literal["cpu", "cuda"], precision: str, batch_size: int, steps: int, warmup: int
) -> list[dict[str, Any]]:
    """Eager FP32, then DDP with `precision` autocast; rows on rank 0 (an empty list on the other ranks)."""
    if not distributed.launched_by_torchrun():
        # A one-process group, so that the DDP path is the real one on a single GPU.
        for key, value in SINGLE_PROCESS_GROUP_ENV.items():
            os.environ.setdefault(key, value)
    env = distributed.init_process_group(device)
    try:
        if env.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False  # FP32 means FP32 in the baseline
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.benchmark = True
        rows = []
        for mode_precision, use_ddp in (("fp32", False), (precision, True)):
            torch.manual_seed(0)
            model = resnet50_sized_teacher(INPUT_SHAPE, NUM_CLASSES)
            rows.append(measure(model, env.device, mode_precision, batch_size, steps, warmup, env, use_ddp))
            del model
            if env.device.type == "cuda":
                torch.cuda.empty_cache()
        return rows if env.is_main else []
    finally:
        distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ddp", description=__doc__)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precision", choices=("bf16", "fp16"), default="bf16")
    parser.add_argument("--allow-cpu", action="store_true", help="time a CPU anyway (smoke test only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.device == "cuda" and not torch.cuda.is_available():
        log.error("no CUDA GPU visible: this benchmark needs one (nothing was measured)")
        return 2
    if args.device == "cpu" and not args.allow_cpu:
        log.error("CPU timings are not what this benchmark reports; pass --allow-cpu for a smoke test")
        return 2
    rows = run_modes(args.device, args.precision, args.batch_size, args.steps, args.warmup)
    if rows:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        log.info(
            "%s vs eager-fp32: %.2fx images/s",
            rows[1]["mode"],
            rows[1]["images_per_s"] / rows[0]["images_per_s"],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

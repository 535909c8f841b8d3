"""The GPU bench's CPU-side behaviour: refusals with reasons, the merge into optimize.json, the rendered table.

The GPU numbers themselves come from a GPU machine (`scripts/gpu-checks.sh`); `tests/gpu/` runs there.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
import torch

from benchmarks import compression as bench
from benchmarks import ddp as bench_ddp

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusals")

MEASURED = {
    "measured": True,
    "gpu": "NVIDIA H200",
    "torch": "2.11.0",
    "batch": 256,
    "iterations": 20,
    "eager_fp32": 1000.0,
    "eager_fp16_channels_last": 4000.0,
    "compile_fp16_channels_last": 8000.0,
    "tensorrt_fp16": None,
    "student": {
        "params": 6_917_640,
        "eager_fp16_channels_last": 9000.0,
        "compile_fp16_channels_last": 20000.0,
        "tensorrt_fp16": None,
        "ort_cuda_fp32": None,
    },
    "best_student_path": "compile_fp16_channels_last",
    "best_student_vs_teacher_eager_fp32": 20.0,
    "training": [
        {"mode": "eager-fp32", "world_size": 1, "batch_size_per_process": 256, "images_per_s": 500.0},
        {"mode": "ddp-bf16", "world_size": 1, "batch_size_per_process": 256, "images_per_s": 3000.0},
    ],
}


def test_cpu_run_says_why_nothing_was_measured() -> None:
    assert bench.gpu_results("cpu") == {"measured": False, "reason": "CPU run, without --device cuda"}
    lines = bench.render_gpu(bench.gpu_results("cpu"))
    assert any("Not measured" in line and "without --device cuda" in line for line in lines)


def test_measured_gpu_rows_are_ratios_to_fp32() -> None:
    text = "\n".join(bench.render_gpu(MEASURED))
    assert "| inference | teacher, eager FP16 channels_last | 4,000 | 4.00x |" in text
    assert "| inference | teacher, torch.compile FP16 channels_last | 8,000 | 8.00x |" in text
    assert "| inference | teacher, TensorRT FP16 | not measured (TensorRT is not installed here) | |" in text
    assert (
        "| inference | pruned student (6.9 M params), torch.compile FP16 channels_last | 20,000 | 20.00x |"
        in text
    )
    assert (
        "pruned student (6.9 M params), ONNX Runtime CUDA FP32 | not measured (this onnxruntime has no CUDA"
        in text
    )
    assert "**20.0x** the teacher's eager FP32 throughput (target >= 4x)" in text
    assert "| training | ddp-bf16 (world size 1, batch 256) | 3,000 | 6.00x |" in text


def test_gpu_only_needs_an_existing_cpu_bench(tmp_path: Path) -> None:
    with pytest.raises(click.UsageError, match=r"optimize\.json, which does not exist"):
        bench.run_gpu_only(tmp_path)


@needs_no_gpu
def test_gpu_only_without_a_gpu_fails_and_leaves_the_json_alone(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks" / "optimize.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"gpu": {"measured": False, "reason": "earlier"}}))
    with pytest.raises(click.ClickException, match="no CUDA GPU is visible"):
        bench.run_gpu_only(tmp_path)
    assert json.loads(path.read_text())["gpu"]["reason"] == "earlier"


@needs_no_gpu
def test_ddp_bench_refuses_without_cuda_and_cpu_timings_without_opt_in() -> None:
    assert bench_ddp.main(["--device", "cuda"]) == 2
    assert bench_ddp.main(["--device", "cpu"]) == 2

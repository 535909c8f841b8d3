"""AOTInductor on CPU: the eager FP32 teacher vs the student's `.pt2` package (and, for context, the student in
eager PyTorch and in ONNX Runtime FP32), with the compile time and the parity against eager.

`python -m benchmarks.aoti --output docs` writes docs/benchmarks/aoti.json and prints one line per model;
`--device cuda` (scripts/gpu-checks.sh) measures on the GPU instead: the teacher in eager FP32 vs the student's
.pt2 in FP32, FP16 and BF16 (no ONNX Runtime row: the GPU machine's onnxruntime is CPU-only). The
models are the zoo's digits-sized teacher and student (1x8x8 inputs, 10 classes) with seeded weights, or the
checkpoints given with --teacher/--student: speed does not depend on what the weights learned. Latency is the
median over repeats of batch-1 p50/p99, throughput images/s at batch 64 (slipway.evaluation.evaluate).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slipway.compression.aoti import aoti_predictor, check_aoti_parity, compile_aoti
from slipway.compression.onnx_export import export_onnx
from slipway.core.config import EvaluateConfig
from slipway.core.models import count_parameters, load_model, student_cnn, teacher_cnn
from slipway.evaluation.evaluate import measure_speed, onnx_predictor, torch_predictor

log = logging.getLogger(__name__)
INPUT_SHAPE = (1, 8, 8)
CLASSES = 10


def _models(teacher: Path | None, student: Path | None) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    t = load_model(teacher)[0] if teacher else teacher_cnn(INPUT_SHAPE, CLASSES)
    s = load_model(student)[0] if student else student_cnn(INPUT_SHAPE, CLASSES)
    return t.eval(), s.eval()


def _eager(model: torch.nn.Module, device: str, threads: int | None):
    if device == "cpu":
        return torch_predictor(model, threads)
    model = model.to(device)

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x).to(device)).cpu().numpy()

    return predict


def run(
    teacher_path: Path | None, student_path: Path | None, threads: int | None, device: str = "cpu"
) -> dict[str, Any]:
    teacher, student = _models(teacher_path, student_path)
    x = np.random.default_rng(0).standard_normal((512, *INPUT_SHAPE)).astype(np.float32)
    cfg = EvaluateConfig(threads=threads)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        n_teacher, n_student = count_parameters(teacher), count_parameters(student)
        predictors = {
            "teacher eager FP32": (_eager(teacher, device, threads), n_teacher),
            "student eager FP32": (_eager(student, device, threads), n_student),
        }
        compile_s: dict[str, float] = {}
        parity: dict[str, float] = {}
        package_bytes = 0
        for precision in ("fp32",) if device == "cpu" else ("fp32", "fp16", "bf16"):
            package = Path(tmp) / f"student-{precision}.pt2"
            start = time.perf_counter()
            compile_aoti(student, INPUT_SHAPE, package, precision, device)  # type: ignore[arg-type]
            compile_s[precision] = round(time.perf_counter() - start, 1)
            result = check_aoti_parity(student, package, x, precision, device)  # type: ignore[arg-type]
            parity[precision] = result.max_abs_diff
            package_bytes = package_bytes or package.stat().st_size
            name = f"student AOTInductor .pt2 {precision.upper()}"
            predictors[name] = (aoti_predictor(package, threads, device), n_student)
        if device == "cpu":
            onnx_path = Path(tmp) / "student.onnx"
            export_onnx(student, INPUT_SHAPE, onnx_path)
            predictors["student ONNX Runtime FP32"] = (onnx_predictor(onnx_path, threads), n_student)
        for name, (predict, params) in predictors.items():
            speed = measure_speed(predict, x, cfg)
            rows[name] = {"params": params, **speed.model_dump()}
            log.info("%s: %s", name, rows[name])
    base = rows["teacher eager FP32"]["throughput_ips_b64"]
    for row in rows.values():
        row["speedup_vs_teacher_eager"] = round(row["throughput_ips_b64"] / base, 2)
    return {
        "machine": _machine(device),
        "command": f"python -m benchmarks.aoti --device {device}",
        "compile_s": compile_s,
        "package_bytes_fp32": package_bytes,
        "parity_max_abs_diff": parity,
        "models": rows,
    }


def _machine(device: str) -> str:
    where = torch.cuda.get_device_name() if device.startswith("cuda") else platform.machine()
    return f"{where}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("docs"))
    parser.add_argument("--teacher", type=Path, help="a Slipway .pt checkpoint (default: the zoo's teacher)")
    parser.add_argument("--student", type=Path, help="a Slipway .pt checkpoint (default: the zoo's student)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run(args.teacher, args.student, args.threads, args.device)
    suffix = "" if args.device == "cpu" else "-gpu"
    out = args.output / "benchmarks" / f"aoti{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"compile s {result['compile_s']}, parity max abs diff {result['parity_max_abs_diff']}")
    for name, row in result["models"].items():
        print(
            f"{name}: {row['throughput_ips_b64']:,.0f} img/s at batch 64 ({row['speedup_vs_teacher_eager']}x "
            f"the teacher), p50 {row['latency_ms_p50_b1']:.3f} ms, p99 {row['latency_ms_p99_b1']:.3f} ms"
        )


if __name__ == "__main__":
    main()

# Over 500 lines: one report (measure, render markdown, plot) whose sections share one JSON schema; kept together.
"""`make bench` (`python -m benchmarks`): what compression buys, measured in one run per dataset on this machine.

Per dataset (digits, mnist1d): teacher FP32 eager and ONNX Runtime, student FP32 eager and ORT, pruned
student INT8 ORT and the optimizer's choice, all on the same test data with the same thread count. Ratios
are against the FP32 teacher. Also "what distillation buys" (student with and without a teacher, 3 seeds)
and, with `--device cuda`, eager FP32 / FP16 channels_last / torch.compile FP16 / TensorRT for a
ResNet-50-sized model at batch 256. Writes docs/benchmarks/optimize.{json,png} and a section of
docs/benchmarks.md between its own markers, then runs the serving, monitoring and loop benches.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import torch
from torch import nn

from slipway.compression import tradeoff
from slipway.compression.onnx_export import export_onnx
from slipway.compression.pruning import prune_and_finetune
from slipway.compression.quantize import calibration_sample, convert_fp16, quantize_int8
from slipway.compression.selection import choose
from slipway.core.artifacts import write_metadata
from slipway.core.config import EvaluateConfig, load_config
from slipway.core.data import DatasetSplits, load_dataset
from slipway.core.logs import setup_logging
from slipway.core.models import build_model, count_parameters, save_model
from slipway.evaluation.evaluate import ModelEvaluation, evaluate_model, onnx_predictor, torch_predictor
from slipway.training.loop import accuracy, train

log = logging.getLogger(__name__)
DATASETS = {"digits": "quickstart", "mnist1d": "mnist1d"}
ROLE_COLOURS = {"teacher": "tab:blue", "student": "tab:green"}
PLOT_CAPTION = (
    "Each candidate at (throughput, test accuracy), marker area proportional to its size, the Pareto front drawn "
    "and the chosen format ringed; the numbers are named in the table under each panel. "
    "`python -m benchmarks.compression --plot-only` redraws it from `optimize.json`."
)
MARK_START, MARK_END = "<!-- optimize:start -->", "<!-- optimize:end -->"
INTRO = "# Benchmarks\n\nMeasured tables and plots; each section is written by its own bench command.\n"
ACCEPT = {
    "size": 10.0,
    "throughput_b64_vs_eager": 5.0,
    "throughput_b64_vs_ort": 3.0,
    "accuracy_drop_points": 1.0,
}


def _eval(name: str, fmt: str, runtime: str, predict: Any, splits: DatasetSplits, params: int, size: int,
          ev: EvaluateConfig) -> ModelEvaluation:  # fmt: skip
    return evaluate_model(
        name, fmt, runtime, predict, splits.x_test, splits.y_test, splits.num_classes, params, size, ev
    )


def _export(model: nn.Module, splits: DatasetSplits, path: Path) -> Path:
    artifact = export_onnx(model, splits.input_shape, path)
    write_metadata(path, artifact.model_copy(update={"extra": {"params": count_parameters(model)}}))
    return path


def bench_dataset(dataset: str, work: Path, threads: int, ev: EvaluateConfig, quick: bool) -> dict[str, Any]:
    """Train, distil, prune, quantize and measure one dataset's models; returns rows, ratios and the choice."""
    overrides = ["train.epochs=3", "distill.epochs=3", "compress.prune.finetune.epochs=2"] if quick else []
    cfg = load_config(DATASETS[dataset], overrides)
    splits = load_dataset(cfg.data, cfg.seed)
    torch.set_num_threads(threads)
    xy = (splits.x_train, splits.y_train, splits.x_val, splits.y_val)
    torch.manual_seed(cfg.seed)
    teacher = build_model(cfg.teacher, splits.input_shape, splits.num_classes)
    train(teacher, *xy, cfg.train, cfg.seed, work / "teacher-ckpt", label=f"{dataset} teacher")
    torch.manual_seed(cfg.seed)
    student = build_model(cfg.student, splits.input_shape, splits.num_classes)
    train(
        student,
        *xy,
        cfg.distill,
        cfg.seed,
        work / "student-ckpt",
        teacher=teacher,
        label=f"{dataset} student",
    )
    pruned, prune_report = prune_and_finetune(
        student, teacher, xy, splits.input_shape, splits.num_classes, cfg.compress.prune, cfg.seed,
        work / "pruned-ckpt",
    )  # fmt: skip
    teacher_pt = work / "teacher.pt"
    save_model(teacher, cfg.teacher, splits.input_shape, splits.num_classes, teacher_pt)
    files = {
        "teacher": _export(teacher, splits, work / "teacher.onnx"),
        "student": _export(student, splits, work / "student.onnx"),
        "pruned": _export(pruned, splits, work / "pruned.onnx"),
    }
    q = cfg.compress.quantize
    x_parity = splits.x_val[: cfg.export.parity_samples]
    calib = calibration_sample(splits.x_train, q.calibration_samples, cfg.seed)
    int8 = quantize_int8(files["pruned"], work / "pruned-int8.onnx", calib, x_parity, splits.x_test, splits.y_test,
                         q, threads)  # fmt: skip
    fp16 = convert_fp16(
        files["pruned"], work / "pruned-fp16.onnx", x_parity, splits.x_test, splits.y_test, q, threads
    )
    size = lambda p: Path(p).stat().st_size  # noqa: E731
    tp, sp, pp = count_parameters(teacher), count_parameters(student), count_parameters(pruned)
    rows = {
        "teacher_eager": _eval("teacher", "pytorch-fp32", "torch-eager", torch_predictor(teacher, threads), splits,
                               tp, size(teacher_pt), ev),
        "teacher_ort": _eval("teacher", "onnx-fp32", "onnxruntime", onnx_predictor(files["teacher"], threads),
                             splits, tp, size(files["teacher"]), ev),
        "student_eager": _eval("student", "pytorch-fp32", "torch-eager", torch_predictor(student, threads), splits,
                               sp, size(files["student"]), ev),
        "student_ort": _eval("student", "onnx-fp32", "onnxruntime", onnx_predictor(files["student"], threads),
                             splits, sp, size(files["student"]), ev),
        "pruned_ort": _eval("student", "onnx-pruned-fp32", "onnxruntime", onnx_predictor(files["pruned"], threads),
                            splits, pp, size(files["pruned"]), ev),
        "pruned_int8_ort": _eval("student", "onnx-int8", "onnxruntime", onnx_predictor(int8.path, threads),
                                 splits, pp, size(int8.path), ev),
        "pruned_fp16_ort": _eval("student", "onnx-fp16", "onnxruntime", onnx_predictor(fp16.path, threads),
                                 splits, pp, size(fp16.path), ev),
    }  # fmt: skip
    candidates = {
        "onnx-fp32": rows["student_ort"],
        "onnx-pruned-fp32": rows["pruned_ort"],
        "onnx-int8": rows["pruned_int8_ort"],
        "onnx-fp16": rows["pruned_fp16_ort"],
    }
    selection = choose(candidates, rows["student_ort"].accuracy, cfg.compress.accuracy_budget_points)
    chosen = candidates[selection.chosen]
    t_eager, t_ort = rows["teacher_eager"], rows["teacher_ort"]
    ratios = {
        "size": t_ort.size_bytes / chosen.size_bytes,
        "throughput_b64_vs_eager": chosen.throughput_ips_b64 / t_eager.throughput_ips_b64,
        "throughput_b64_vs_ort": chosen.throughput_ips_b64 / t_ort.throughput_ips_b64,
        "accuracy_drop_points": (t_ort.accuracy - chosen.accuracy) * 100,
        "params": t_ort.params / chosen.params,
        "latency_p50_b1_vs_ort": t_ort.latency_ms_p50_b1 / chosen.latency_ms_p50_b1,
    }
    acceptance = {
        k: (ratios[k] <= v if k == "accuracy_drop_points" else ratios[k] >= v) for k, v in ACCEPT.items()
    }
    return {
        "dataset": dataset,
        "preset": DATASETS[dataset],
        "teacher": cfg.teacher.model_dump(),
        "student": cfg.student.model_dump(),
        "rows": {
            k: v.model_dump(exclude={"confusion_matrix", "per_class_accuracy"}) for k, v in rows.items()
        },
        "chosen": selection.chosen,
        "reasons": selection.reasons,
        "ratios": ratios,
        "acceptance": acceptance,
        "pruning": prune_report.model_dump(exclude={"channels"}),
        "parity": {
            "int8_top1_agreement": int8.top1_agreement,
            "fp16_top1_agreement": fp16.top1_agreement,
            "int8_attempts": [a.label for a in int8.attempts],
        },
    }


def distillation_study(dataset: str, work: Path, seeds: int, quick: bool, threads: int) -> dict[str, Any]:
    """Student with and without distillation, several seeds, in a low-data setting where a teacher matters."""
    samples = 600
    overrides = [f"data.max_train_samples={samples}", "student.kwargs={width: 16, stages: 3}"]
    overrides += ["train.epochs=3", "distill.epochs=3"] if quick else []
    cfg = load_config(DATASETS[dataset], overrides)
    splits = load_dataset(cfg.data, cfg.seed)
    torch.set_num_threads(threads)
    xy = (splits.x_train, splits.y_train, splits.x_val, splits.y_val)
    full = load_dataset(cfg.data.model_copy(update={"max_train_samples": None}), cfg.seed)
    torch.manual_seed(cfg.seed)
    teacher = build_model(cfg.teacher, full.input_shape, full.num_classes)
    train(teacher, full.x_train, full.y_train, full.x_val, full.y_val, cfg.train, cfg.seed, work / "dteacher",
          label="distill-study teacher")  # fmt: skip
    results: dict[str, list[float]] = {"distilled": [], "plain": []}
    plain_cfg = cfg.train.model_copy(update={"epochs": cfg.distill.epochs, "lr": cfg.distill.lr,
                                             "patience": cfg.distill.patience})  # fmt: skip
    for seed in range(seeds):
        for kind in results:
            torch.manual_seed(seed)
            model = build_model(cfg.student, splits.input_shape, splits.num_classes)
            if kind == "distilled":
                train(
                    model,
                    *xy,
                    cfg.distill,
                    seed,
                    work / f"d{seed}",
                    teacher=teacher,
                    label=f"distilled s{seed}",
                )
            else:
                train(model, *xy, plain_cfg, seed, work / f"p{seed}", label=f"plain s{seed}")
            results[kind].append(accuracy(model, splits.x_test, splits.y_test))
    summary: dict[str, dict[str, Any]] = {
        k: {"mean": statistics.mean(v), "stdev": statistics.stdev(v) if len(v) > 1 else 0.0, "runs": v}
        for k, v in results.items()
    }
    return {
        "dataset": dataset,
        "train_samples": samples,
        "student": cfg.student.model_dump(),
        "teacher_test_accuracy": accuracy(teacher, full.x_test, full.y_test),
        "seeds": seeds,
        **summary,
        "gain_points": (summary["distilled"]["mean"] - summary["plain"]["mean"]) * 100,
    }


def _bottleneck(cin: int, mid: int, stride: int) -> nn.Module:
    cout = mid * 4

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
            )  # fmt: skip
            self.skip = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.skip(x))

    return Block()


def resnet50(num_classes: int = 1000) -> nn.Module:
    """ResNet-50 (25.6M parameters), written out here because torchvision is not a dependency."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
    ]  # fmt: skip
    cin = 64
    for mid, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(_bottleneck(cin, mid, stride if i == 0 else 1))
            cin = mid * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def gpu_bench(batch: int = 256, iterations: int = 20) -> dict[str, Any]:
    """ResNet-50 at batch 256 on CUDA: eager FP32, FP16 channels_last, torch.compile FP16 (images/s)."""
    if not torch.cuda.is_available():
        return {"measured": False, "reason": "no CUDA GPU is visible in this session"}
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 means FP32 in the baseline
    torch.backends.cudnn.allow_tf32 = False
    model = resnet50().to(device).eval()
    x = torch.randn(batch, 3, 224, 224, device=device)

    def rate(fn: Any, inp: torch.Tensor) -> float:
        with torch.inference_mode():
            for _ in range(5):
                fn(inp)
            torch.cuda.synchronize()
            times = []
            for _ in range(3):
                start = time.perf_counter()
                for _ in range(iterations):
                    fn(inp)
                torch.cuda.synchronize()
                times.append(batch * iterations / (time.perf_counter() - start))
        return statistics.median(times)

    results: dict[str, Any] = {
        "measured": True,
        "gpu": torch.cuda.get_device_name(),
        "batch": batch,
        "torch": torch.__version__,
        "iterations": iterations,
    }
    results["eager_fp32"] = rate(model, x)
    results.update(_fp16_paths(model, x, rate, "resnet50"))
    results["student"] = _gpu_student(x, rate)
    best = max((k for k in STUDENT_PATHS if results["student"].get(k)), key=lambda k: results["student"][k])
    results["best_student_path"] = best
    results["best_student_vs_teacher_eager_fp32"] = results["student"][best] / results["eager_fp32"]
    return results


STUDENT_PATHS = ("eager_fp16_channels_last", "compile_fp16_channels_last", "tensorrt_fp16", "ort_cuda_fp32")


def _fp16_paths(model: nn.Module, x: torch.Tensor, rate: Any, name: str) -> dict[str, float | None]:
    """Images/s of `model` in FP16: eager channels_last, torch.compile, and a TensorRT engine when importable."""
    out: dict[str, float | None] = {"tensorrt_fp16": None}
    if importlib.util.find_spec("tensorrt") is not None:
        from slipway.compression.tensorrt import TensorRTRunner, build_engine
        from slipway.core.config import TensorRTConfig

        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / f"{name}.onnx"
            export_onnx(model.float().cpu(), tuple(x.shape[1:]), onnx_path)
            engine = Path(tmp) / f"{name}.plan"
            cfg = TensorRTConfig(min_batch=1, opt_batch=x.shape[0], max_batch=x.shape[0])
            build_engine(onnx_path, engine, cfg, x[:64].float().cpu().numpy())
            out["tensorrt_fp16"] = rate(TensorRTRunner(engine).predict_tensor, x.float())
    half = model.to(x.device).half().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    xh = x.half().to(memory_format=torch.channels_last)
    out["eager_fp16_channels_last"] = rate(half, xh)
    out["compile_fp16_channels_last"] = rate(torch.compile(half), xh)
    return out


def _gpu_student(x: torch.Tensor, rate: Any) -> dict[str, Any]:
    """The optimizer's structured pruning (torch-pruning, half the channels) on ResNet-50, then its fast paths."""
    from slipway.compression.onnx_export import ort_session
    from slipway.compression.pruning import structured_prune
    from slipway.core.config import PruneConfig

    student = resnet50().eval()
    ratio = 0.5
    structured_prune(student, (3, 224, 224), 1000, PruneConfig(ratio=ratio))
    out: dict[str, Any] = {"pruning_ratio": ratio, "params": count_parameters(student), "ort_cuda_fp32": None}
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():  # the Triton ONNX Runtime backend's GPU path
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / "student.onnx"
            export_onnx(student, (3, 224, 224), onnx_path)
            session = ort_session(onnx_path, providers=["CUDAExecutionProvider"])
            name = session.get_inputs()[0].name
            xs = x.float().cpu().numpy()
            out["ort_cuda_fp32"] = rate(lambda _: session.run(None, {name: xs}), x)
    out["ort_providers"] = ort.get_available_providers()
    out.update(_fp16_paths(student, x, rate, "student"))
    return out


def gpu_results(device: str) -> dict[str, Any]:
    """Inference (ResNet-50, batch 256) and training (DDP + bf16 vs eager FP32) on the GPU, or why not."""
    if device != "cuda":
        return {"measured": False, "reason": "CPU run, without --device cuda"}
    results = gpu_bench()
    if results["measured"]:
        from benchmarks import ddp as bench_ddp

        results["training"] = bench_ddp.run_modes("cuda", "bf16", batch_size=256, steps=30, warmup=5)
        results["command"] = (
            "python -m benchmarks.compression --device cuda --gpu-only (scripts/gpu-checks.sh)"
        )
    return results


def run_gpu_only(output: Path) -> dict[str, Any]:
    """Measure the GPU part alone and merge it into an existing optimize.json (the CPU rows stay as they were)."""
    path = output / "benchmarks" / "optimize.json"
    if not path.is_file():
        raise click.UsageError(f"--gpu-only updates {path}, which does not exist: run the full bench first")
    result = json.loads(path.read_text())
    result["gpu"] = gpu_results("cuda")
    if not result["gpu"]["measured"]:
        raise click.ClickException(f"nothing measured: {result['gpu']['reason']}")
    path.write_text(json.dumps(result, indent=2) + "\n")
    section = render_markdown(result)
    write_section(output / "benchmarks.md", section)
    click.echo(section)
    return result


def _fmt_row(name: str, r: dict[str, Any], teacher: dict[str, Any]) -> str:
    return (
        f"| {name} | {r['format']} | {r['runtime']} | {r['accuracy']:.4f} | {r['params']:,} | "
        f"{r['size_bytes'] / 1024:,.1f} | {r['latency_ms_p50_b1']:.3f} | {r['latency_ms_p99_b1']:.3f} | "
        f"{r['throughput_ips_b64']:,.0f} | {r['throughput_ips_b64'] / teacher['throughput_ips_b64']:.1f}x |"
    )


def render_markdown(result: dict[str, Any]) -> str:
    """The section of docs/benchmarks.md this bench owns."""
    lines = [
        MARK_START,
        "## Optimization: teacher vs compressed student (CPU)",
        "",
        f"Machine: {result['machine']}. Command: `{result['command']}`. Threads: {result['threads']} for PyTorch and "
        f"ONNX Runtime alike. Latency is the median over {result['evaluate']['repeats']} repeats of per-call p50/p99 "
        "at batch 1; throughput is images/s at batch 64 (median over repeats). Ratios are against the FP32 teacher. "
        "The machine may be shared with other jobs: single rows can be noisy (compare ratios from one run).",
        "",
    ]
    for ds in result["datasets"]:
        t = ds["rows"]["teacher_eager"]
        lines += [
            f"### {ds['dataset']} (chosen: `{ds['chosen']}`)",
            "",
            "| model | format | runtime | accuracy | params | size KiB | p50 ms b1 | p99 ms b1 | img/s b64 | vs teacher eager |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key, row in ds["rows"].items():
            lines.append(_fmt_row(key, row, t))
        r, a = ds["ratios"], ds["acceptance"]
        lines += [
            "",
            f"Chosen vs teacher: **{r['size']:.1f}x smaller** on disk (ONNX), **{r['throughput_b64_vs_eager']:.1f}x** "
            f"the throughput of the eager teacher, **{r['throughput_b64_vs_ort']:.1f}x** the ONNX Runtime teacher, "
            f"accuracy drop **{r['accuracy_drop_points']:.2f} points**. Acceptance (>= 10x, >= 5x, >= 3x, <= 1.0): "
            + ", ".join(f"{k} {'pass' if v else 'FAIL'}" for k, v in a.items())
            + f". Parity: INT8 top-1 agreement {ds['parity']['int8_top1_agreement']:.4f}, FP16 "
            f"{ds['parity']['fp16_top1_agreement']:.4f}.",
            "",
            "Why: " + " / ".join(ds["reasons"][:3]),
            "",
        ]
    d = result.get("distillation")
    if d:
        lines += [
            "### What distillation buys",
            "",
            f"{d['dataset']}, {d['train_samples']} training samples, student `{d['student']['architecture']}` "
            f"{d['student']['kwargs']}, teacher {d['teacher_test_accuracy']:.4f} (trained on all data), "
            f"{d['seeds']} seeds:",
            "",
            "| student | mean test accuracy | stdev | runs |",
            "| --- | ---: | ---: | --- |",
            f"| distilled | {d['distilled']['mean']:.4f} | {d['distilled']['stdev']:.4f} | "
            + ", ".join(f"{v:.4f}" for v in d["distilled"]["runs"]) + " |",
            f"| plain (labels only) | {d['plain']['mean']:.4f} | {d['plain']['stdev']:.4f} | "
            + ", ".join(f"{v:.4f}" for v in d["plain"]["runs"]) + " |",
            "",
            f"Gain: {d['gain_points']:+.2f} points on average"
            + (" (within the seed spread: not a reliable gain here)." if abs(d["gain_points"]) / 100
               < max(d["distilled"]["stdev"], d["plain"]["stdev"]) else "."),
            "",
        ]  # fmt: skip
    lines += render_gpu(result["gpu"])
    lines += [PLOT_CAPTION, "", "![accuracy vs throughput](benchmarks/optimize.png)", "", MARK_END]
    return "\n".join(lines)


GPU_PATH_LABELS = {
    "eager_fp32": "eager FP32",
    "eager_fp16_channels_last": "eager FP16 channels_last",
    "compile_fp16_channels_last": "torch.compile FP16 channels_last",
    "tensorrt_fp16": "TensorRT FP16",
    "ort_cuda_fp32": "ONNX Runtime CUDA FP32",
}
WHY_NOT_MEASURED = {
    "tensorrt_fp16": "TensorRT is not installed here",
    "ort_cuda_fp32": "this onnxruntime has no CUDA execution provider",
}


def _gpu_row(who: str, key: str, value: float | None, base: float) -> str:
    """One inference row: images/s and the ratio to the teacher's eager FP32, or why it was not measured."""
    label = GPU_PATH_LABELS[key]
    if value is None:
        return f"| inference | {who}, {label} | not measured ({WHY_NOT_MEASURED.get(key, 'not run')}) | |"
    return f"| inference | {who}, {label} | {value:,.0f} | {value / base:.2f}x |"


def render_gpu(g: dict[str, Any]) -> list[str]:
    """The GPU part of the section: inference and training images/s as ratios to FP32, or why not measured."""
    lines = ["### GPU: ResNet-50-sized teacher at batch 256", ""]
    if g.get("measured"):
        lines += [
            f"GPU: {g['gpu']}, torch {g.get('torch', '?')}. Command: `{g.get('command', 'python -m benchmarks --device cuda')}`. "
            "Inference: ResNet-50 (25.6 M parameters) at 224x224, "
            f"batch {g['batch']}, median of 3 x {g.get('iterations', 20)} batches after warm-up; FP32 rows with TF32 "
            "off. Training: the zoo teacher at width 432 (26.1 M parameters, 3x32x32 inputs, 1,000 classes), "
            "forward + backward + AdamW on synthetic data.",
            "",
            "| workload | mode | images/s | vs FP32 |",
            "|---|---|---:|---:|",
        ]
        base = g["eager_fp32"]
        teacher_paths = (
            "eager_fp32",
            "eager_fp16_channels_last",
            "compile_fp16_channels_last",
            "tensorrt_fp16",
        )
        lines += [_gpu_row("teacher", key, g.get(key), base) for key in teacher_paths]
        st = g.get("student")
        if st:
            who = f"pruned student ({st['params'] / 1e6:.1f} M params)"
            lines += [_gpu_row(who, key, st.get(key), base) for key in STUDENT_PATHS]
        training = g.get("training") or []
        for row in training:
            lines.append(
                f"| training | {row['mode']} (world size {row['world_size']}, batch {row['batch_size_per_process']}) "
                f"| {row['images_per_s']:,.0f} | {row['images_per_s'] / training[0]['images_per_s']:.2f}x |"
            )
        lines.append("")
        if st:
            lines += [
                f"Best student path: {g['best_student_path']}, **{g['best_student_vs_teacher_eager_fp32']:.1f}x** "
                "the teacher's eager FP32 throughput (target >= 4x). The pruned student is ResNet-50 after the "
                "optimizer's structured pruning (torch-pruning, half of the channels); random weights: this "
                "measures speed, accuracy is measured on the CPU datasets above.",
                "",
            ]
    else:
        lines += [
            f"Not measured in this session: no GPU was lent ({g['reason']}). Run `python -m benchmarks --device cuda`.",
            "",
        ]
    return lines


def quickstart_command(output: Path, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The demo as the benches run it: `python -m slipway run quickstart` into `output`, a gate rejection not
    an error, each override as `--set`."""
    command = [
        sys.executable,
        "-m",
        "slipway",
        "run",
        "quickstart",
        "--output",
        str(output),
        "--allow-reject",
    ]
    for item in overrides:
        command += ["--set", item]
    return command


def write_report(output: Path, name: str, result: dict[str, Any], section: str, start: str, end: str) -> None:
    """A bench's raw numbers to OUTPUT/benchmarks/<name>.json and its section of OUTPUT/benchmarks.md."""
    out = output / "benchmarks" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    write_section(output / "benchmarks.md", section, start, end)


def write_section(path: Path, section: str, start: str = MARK_START, end: str = MARK_END) -> None:
    """Replace a bench's section between its markers (this bench's by default), leaving the others alone."""
    text = path.read_text() if path.is_file() else INTRO
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def plot(result: dict[str, Any], path: Path) -> list[list[Any]]:
    """The optimization plot, one panel per dataset (docs/benchmarks/optimize.png); returns each panel's labels."""
    import matplotlib.pyplot as plt

    datasets = result["datasets"]
    fig, panels = tradeoff.figure(len(datasets), max(len(ds["rows"]) for ds in datasets), width_in=6.5)
    labels = []
    for (ax, table), ds in zip(panels, datasets, strict=True):
        rows = ds["rows"]
        chosen = _chosen_row(ds)
        points = [
            tradeoff.Point(
                key, r["accuracy"], r["throughput_ips_b64"], r["size_bytes"], ROLE_COLOURS[r["role"]]
            )
            for key, r in rows.items()
        ]
        teacher = tradeoff.Reference(rows["teacher_ort"]["accuracy"], "teacher", colour="tab:blue")
        labels.append(
            tradeoff.draw(
                ax,
                points,
                chosen=chosen,
                references=[teacher],
                ylabel="test accuracy",
                title=f"{ds['dataset']}: marker area = size, blue = teacher, green = student",
            )
        )
        tradeoff.key_table(
            table,
            ["#", "candidate", "format", "runtime", "KiB", "accuracy", "img/s b64"],
            [
                [
                    str(i),
                    key + (" (chosen)" if key == chosen else ""),
                    r["format"],
                    r["runtime"],
                    f"{r['size_bytes'] / 1024:.1f}",
                    f"{r['accuracy']:.4f}",
                    f"{r['throughput_ips_b64']:,.0f}",
                ]
                for i, (key, r) in enumerate(rows.items(), 1)
            ],
        )
    fig.savefig(path, format="png")
    plt.close(fig)
    return labels


def _chosen_row(ds: dict[str, Any]) -> str:
    """The row of the chosen format: the student's ONNX Runtime row of that format."""
    for key, r in ds["rows"].items():
        if r["role"] == "student" and r["format"] == ds["chosen"] and r["runtime"] == "onnxruntime":
            return str(key)
    raise ValueError(f"{ds['dataset']}: no student onnxruntime row has the chosen format {ds['chosen']!r}")


def run_other_benches(output: Path) -> None:
    """The serving, monitoring and loop benches, each in its own process (they start servers of their own)."""
    for module in ("benchmarks.serving", "benchmarks.monitoring", "benchmarks.loop"):
        code = subprocess.call([sys.executable, "-m", module, "--output", str(output)])
        if code:
            click.echo(f"warning: {module} exited with {code}", err=True)


def run_bench(output: Path, datasets: list[str], device: str, threads: int, seeds: int, quick: bool,
              others: bool) -> dict[str, Any]:  # fmt: skip
    """Everything `make bench` does; returns the JSON it writes."""
    ev = EvaluateConfig(threads=threads) if not quick else EvaluateConfig(threads=threads, repeats=1,
                                                                           latency_iterations=20, warmup=2)  # fmt: skip
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in datasets:
            work = Path(tmp) / name
            work.mkdir()
            results.append(bench_dataset(name, work, threads, ev, quick))
        distill = (
            distillation_study("mnist1d", Path(tmp) / "distill", seeds, quick, threads) if seeds else None
        )
    command = (
        "python -m benchmarks.compression --output "
        + str(output)
        + (f" --device {device}" if device != "cpu" else "")
    )
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}, "
        f"torch {torch.__version__}, onnxruntime {_version('onnxruntime')}",
        "command": command,
        "threads": threads,
        "evaluate": ev.model_dump(),
        "datasets": results,
        "distillation": distill,
        "gpu": gpu_results(device),
        "duration_s": round(time.perf_counter() - started, 1),
    }
    bench_dir = output / "benchmarks"
    bench_dir.mkdir(parents=True, exist_ok=True)
    (bench_dir / "optimize.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, bench_dir / "optimize.png")
    section = render_markdown(result)
    write_section(output / "benchmarks.md", section)
    click.echo(section)
    if others:
        run_other_benches(output)
    return result


def _version(module: str) -> str:
    from importlib.metadata import version

    return version(module)


@click.command("bench")
@click.option(
    "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"), show_default=True
)
@click.option("--dataset", "datasets", multiple=True, type=click.Choice(sorted(DATASETS)),
              default=tuple(DATASETS), show_default=True)  # fmt: skip
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=int, default=os.cpu_count() or 1, show_default=True)
@click.option("--seeds", type=int, default=3, show_default=True, help="distillation study seeds (0: skip it)")
@click.option("--quick", is_flag=True, help="a few epochs only: checks the bench runs, numbers mean nothing")
@click.option(
    "--no-others", is_flag=True, help="do not run the serving, monitoring and loop benches afterwards"
)
@click.option("--gpu-only", is_flag=True, help="measure the GPU part alone and merge it into optimize.json")
@click.option("--plot-only", is_flag=True, help="redraw optimize.png from optimize.json, measure nothing")
def bench_command(output: Path, datasets: tuple[str, ...], device: str, threads: int, seeds: int, quick: bool,
                  no_others: bool, gpu_only: bool, plot_only: bool) -> None:  # fmt: skip
    """Measure teacher vs compressed student per dataset; write docs/benchmarks/optimize.* and benchmarks.md."""
    setup_logging()
    if plot_only:
        json_path = output / "benchmarks" / "optimize.json"
        if not json_path.is_file():
            raise click.ClickException(f"{json_path} does not exist: run the bench before --plot-only")
        plot(json.loads(json_path.read_text()), json_path.with_suffix(".png"))
        click.echo(f"written: {json_path.with_suffix('.png')}")
        return
    if gpu_only:
        run_gpu_only(output)
        return
    run_bench(output, list(datasets), device, threads, seeds, quick, not no_others)


def main(argv: list[str] | None = None) -> None:
    bench_command.main(args=argv, standalone_mode=True)


if __name__ == "__main__":
    main()


__all__ = ["bench_command", "main", "run_bench"]

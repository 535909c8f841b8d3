"""Explanation cost on CPU: ms per image and peak memory of Integrated Gradients (32 steps), saliency and occlusion
for the demo's teacher and student, and the wall time of the whole explain step with the default config.

`python -m benchmarks.explain --output docs` writes docs/benchmarks/explain.json and the `explain` section of
docs/benchmarks.md. The models are the zoo's digits-sized teacher and student (1x8x8 inputs, 10 classes) with
seeded weights, or the checkpoints given with --teacher/--student (cost does not depend on what the weights
learned); the images are the digits test split. Each (model, method) runs in a fresh process, so that its peak
memory is its own: the increase of the process's peak resident set size (`resource.getrusage` ru_maxrss; Linux
reports KiB) from before the first attribution (model, data and Captum loaded) to after a warm-up pass and the
timed runs. tracemalloc would not see it: PyTorch allocates tensors outside Python's allocator. ms per image is
the median over --repeats runs over --images images (Captum calls of 64 rows, as the explain step makes them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.compression import write_report

MARK_START, MARK_END = "<!-- explain:start -->", "<!-- explain:end -->"
METHODS = ("integrated_gradients", "saliency", "occlusion")
ROLES = ("teacher", "student")
STEPS = 32


def _model(role: str, checkpoint: Path | None) -> Any:
    import torch

    from slipway.core.models import load_model, student_cnn, teacher_cnn

    if checkpoint is not None:
        return load_model(checkpoint)[0]
    torch.manual_seed(0)
    return (teacher_cnn if role == "teacher" else student_cnn)((1, 8, 8), 10).eval()


def _digits() -> Any:
    from slipway.core.config import DataConfig
    from slipway.core.data import load_dataset

    return load_dataset(DataConfig(), seed=0)


def measure_one(role: str, method: str, checkpoint: Path | None, images: int, repeats: int) -> dict[str, Any]:
    """In this (fresh) process: ms per image (median over repeats) and the peak RSS increase of the timed runs."""
    import captum.attr  # noqa: F401  loaded before the baseline: its import is not the attribution's memory
    import numpy as np

    from slipway.core.models import count_parameters
    from slipway.evaluation.attribution import CHUNK, attribute

    model = _model(role, checkpoint)
    splits = _digits()
    x = np.resize(splits.x_test, (images, *splits.x_test.shape[1:])).astype(np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # model, data and Captum loaded
    attribute(model, x[:CHUNK], method, steps=STEPS)  # warm-up: thread pools, kernels for these batch shapes
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        attribute(model, x, method, steps=STEPS)
        runs.append((time.perf_counter() - start) * 1000 / images)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "params": count_parameters(model),
        "ms_per_image": round(statistics.median(runs), 3),
        "peak_rss_increase_mib": round((after - before) / 1024, 1),
    }


def _child(role: str, method: str, checkpoint: Path | None, images: int, repeats: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.explain", "--child", role, method]
    command += ["--images", str(images), "--repeats", str(repeats)]
    if checkpoint is not None:
        command += [f"--{role}", str(checkpoint)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{role} {method}: exit {done.returncode}: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def step_seconds(teacher: Path | None, student: Path | None) -> float:
    """The whole explanation with the default config (200 samples, 3 methods, 2 models, the sanity check)."""
    import tempfile

    from slipway.core.config import ExplainConfig
    from slipway.evaluation.explain import explain

    splits = _digits()
    models = _model("teacher", teacher), _model("student", student)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        explain(*models, splits.x_test, splits.y_test, ExplainConfig(), Path(tmp))
        return round(time.perf_counter() - start, 1)


def run(teacher: Path | None, student: Path | None, images: int, repeats: int) -> dict[str, Any]:
    checkpoints = {"teacher": teacher, "student": student}
    rows = {
        role: {method: _child(role, method, checkpoints[role], images, repeats) for method in METHODS}
        for role in ROLES
    }
    import torch

    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "command": f"python -m benchmarks.explain --images {images} --repeats {repeats}",
        "models": "checkpoints given"
        if teacher or student
        else "zoo teacher_cnn / student_cnn, seeded weights",
        "input_shape": [1, 8, 8],
        "ig_steps": STEPS,
        "images": images,
        "repeats": repeats,
        "memory": "peak RSS increase (resource.getrusage ru_maxrss) in a fresh process per row",
        "rows": rows,
        "step_seconds_default_config": step_seconds(teacher, student),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        MARK_START,
        "## Explanations (Captum, CPU)",
        "",
        f"`{result['command']}` on {result['machine']}: {result['models']}, {result['images']} digits test "
        f"images ({'x'.join(str(d) for d in result['input_shape'])}), median of {result['repeats']} runs; "
        f"Integrated Gradients with {result['ig_steps']} steps. Memory: {result['memory']}.",
        "",
        "| model | params | method | ms per image | peak RSS increase (MiB) |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for role, per in result["rows"].items():
        for method, r in per.items():
            lines.append(
                f"| {role} | {r['params']:,} | {method} | {r['ms_per_image']:.2f} | "
                f"{r['peak_rss_increase_mib']:.1f} |"
            )
    lines += [
        "",
        f"The whole explanation with the default config (200 test rows, three methods, teacher and student, "
        f"and the sanity check): {result['step_seconds_default_config']:.1f} s.",
        "",
        MARK_END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("docs"))
    parser.add_argument("--teacher", type=Path, help="a Slipway .pt checkpoint (default: the zoo's teacher)")
    parser.add_argument("--student", type=Path, help="a Slipway .pt checkpoint (default: the zoo's student)")
    parser.add_argument("--images", type=int, default=256, help="images per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per (model, method); the median")
    parser.add_argument("--child", nargs=2, metavar=("ROLE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        role, method = args.child
        checkpoint = args.teacher if role == "teacher" else args.student
        print(json.dumps(measure_one(role, method, checkpoint, args.images, args.repeats)))
        return
    result = run(args.teacher, args.student, args.images, args.repeats)
    write_report(args.output, "explain", result, markdown(result), MARK_START, MARK_END)
    print(markdown(result))


if __name__ == "__main__":
    main()

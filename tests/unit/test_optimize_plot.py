"""The optimization benchmark's plot (docs/benchmarks/optimize.png), redrawn from its JSON by the bench's own
command: numbers that never overlap, tick labels that never collide, the chosen format ringed, the Pareto front
drawn through the undominated rows and marker area growing with size."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import compression as bench


def _row(role: str, fmt: str, runtime: str, accuracy: float, throughput: float, size: int) -> dict:
    return {
        "role": role, "format": fmt, "runtime": runtime, "accuracy": accuracy, "throughput_ips_b64": throughput,
        "size_bytes": size,
    }  # fmt: skip


# Crowded on purpose: three student rows within 10% of each other on both axes, as the real bench gives.
RESULT = {
    "datasets": [
        {
            "dataset": "crowded",
            "chosen": "onnx-int8",
            "rows": {
                "teacher_eager": _row("teacher", "pytorch-fp32", "torch-eager", 0.9917, 2_117, 2_241_137),
                "teacher_ort": _row("teacher", "onnx-fp32", "onnxruntime", 0.9917, 4_614, 2_243_718),
                "student_ort": _row("student", "onnx-fp32", "onnxruntime", 0.9861, 255_565, 30_740),
                "pruned_ort": _row("student", "onnx-pruned-fp32", "onnxruntime", 0.9806, 142_435, 22_160),
                "pruned_int8_ort": _row("student", "onnx-int8", "onnxruntime", 0.9806, 165_660, 15_224),
                "pruned_fp16_ort": _row("student", "onnx-fp16", "onnxruntime", 0.9806, 169_172, 16_724),
            },
        },
        {
            "dataset": "second",
            "chosen": "onnx-fp32",
            "rows": {
                "teacher_ort": _row("teacher", "onnx-fp32", "onnxruntime", 0.986, 11_932, 769_298),
                "student_ort": _row("student", "onnx-fp32", "onnxruntime", 0.984, 79_253, 92_990),
                "pruned_int8_ort": _row("student", "onnx-int8", "onnxruntime", 0.984, 352_782, 30_642),
            },
        },
        {  # less than a decade of throughput: still at least two labelled ticks
            "dataset": "narrow",
            "chosen": "onnx-fp32",
            "rows": {
                "teacher_ort": _row("teacher", "onnx-fp32", "onnxruntime", 0.990, 110_000, 769_298),
                "student_ort": _row("student", "onnx-fp32", "onnxruntime", 0.985, 190_000, 92_990),
            },
        },
    ]
}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list]]:
    folder = tmp_path_factory.mktemp("optimize-plot") / "benchmarks"
    folder.mkdir()
    (folder / "optimize.json").write_text(json.dumps(RESULT))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.compression", "--plot-only", "--output", str(folder.parent)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (folder / "optimize.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return folder, bench.plot(RESULT, folder / "again.png")


def test_point_numbers_and_tick_labels_never_overlap(drawn) -> None:
    _, panels = drawn
    for labels, dataset in zip(panels, RESULT["datasets"], strict=True):
        assert [label.get_text() for label in labels] == [str(i) for i in range(1, len(dataset["rows"]) + 1)]
        boxes = [label.get_window_extent() for label in labels]
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b)
        ax = labels[0].axes
        left, right = ax.get_xlim()
        ticks = [
            t.get_window_extent()
            for t in ax.get_xticklabels()
            if t.get_text() and left <= t.get_position()[0] <= right
        ]
        assert len(ticks) >= 2
        for a, b in itertools.combinations(ticks, 2):
            assert not a.overlaps(b)


def test_the_chosen_row_is_ringed_and_the_front_runs_through_the_undominated_rows(drawn) -> None:
    _, panels = drawn
    ax = panels[0][0].axes
    ring = next(c for c in ax.collections if c.get_label() == "chosen: pruned_int8_ort")
    assert [tuple(xy) for xy in ring.get_offsets()] == [(165_660, 0.9806)]
    front = next(line for line in ax.get_lines() if line.get_label() == "Pareto front")
    # fastest first: student_ort beats every pruned row on both axes; teacher_ort beats teacher_eager
    assert set(front.get_xdata()) == {255_565, 4_614}
    markers = ax.collections[0]
    sizes = dict(zip(RESULT["datasets"][0]["rows"], markers.get_sizes(), strict=True))
    assert sizes["teacher_ort"] > sizes["student_ort"] > sizes["pruned_ort"] > sizes["pruned_int8_ort"]


def test_plot_only_without_a_json_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.compression", "--plot-only", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "optimize.json does not exist" in done.stderr


def test_a_chosen_format_without_a_student_row_is_named() -> None:
    broken = {"dataset": "x", "chosen": "onnx-fp16", "rows": RESULT["datasets"][1]["rows"]}
    with pytest.raises(ValueError, match="onnx-fp16"):
        bench.plot({"datasets": [broken]}, Path("unused.png"))

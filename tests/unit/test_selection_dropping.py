"""Selection drops candidates over budget or rejected upstream with their numbers; FP32 ONNX is the floor."""

import pytest
from evaluations import evaluation

from slipway.compression.selection import FLOOR, Selection, choose
from slipway.core.errors import NotFoundError

INT8_MISS = "INT8 of student.onnx stays outside the budget (max drop 1.00 points ...)"


def _line(sel: Selection, fmt: str) -> str:
    (line,) = [r for r in sel.reasons if r.startswith(f"{fmt}: ")]
    return line


def test_rejected_upstream_is_dropped_with_its_numbers_and_the_next_is_chosen() -> None:
    evs = {
        "onnx-fp32": evaluation("onnx-fp32", 0.98, 1000),
        "onnx-int8": evaluation(
            "onnx-int8", 0.975, 3000
        ),  # within the selection budget, but quantize rejected it
        "onnx-fp16": evaluation("onnx-fp16", 0.98, 2000),
    }
    sel = choose(evs, 0.98, 1.0, rejected={"onnx-int8": INT8_MISS})
    assert sel.chosen == "onnx-fp16" and not sel.floor
    int8 = next(c for c in sel.candidates if c.format == "onnx-int8")
    assert not int8.eligible and int8.rejected == INT8_MISS and int8.evaluation == evs["onnx-int8"]
    line = _line(sel, "onnx-int8")
    assert line.startswith(f"onnx-int8: excluded, {INT8_MISS}")
    assert "accuracy 0.9750, drop 0.50 points, 3,000 img/s at batch 64, p99 1.000 ms" in line


def test_over_budget_is_dropped_with_its_numbers_and_the_next_is_chosen() -> None:
    evs = {
        "onnx-int8": evaluation("onnx-int8", 0.95, 3000),
        "onnx-pruned-fp32": evaluation("onnx-pruned-fp32", 0.978, 1500),
    }
    sel = choose(evs, 0.98, 1.0)
    assert sel.chosen == "onnx-pruned-fp32" and not sel.floor
    assert _line(sel, "onnx-int8") == (
        "onnx-int8: excluded, accuracy drop 3.00 points > budget 1.00 "
        "(accuracy 0.9500, drop 3.00 points, 3,000 img/s at batch 64, p99 1.000 ms)"
    )


def test_every_optimized_candidate_dropped_falls_back_to_the_fp32_floor() -> None:
    evs = {
        "onnx-fp32": evaluation("onnx-fp32", 0.98, 1000),
        "onnx-int8": evaluation("onnx-int8", 0.96, 3000),
        "onnx-fp16": evaluation("onnx-fp16", 0.95, 2000),
    }
    sel = choose(
        evs,
        0.98,
        1.0,
        skipped={"onnx-pruned-fp32": "not produced"},
        rejected={FLOOR: "not in compress.candidates (reference only)", "onnx-int8": INT8_MISS},
    )
    assert sel.chosen == FLOOR and sel.floor
    assert sel.reasons[0].startswith(f"chose {FLOOR} as the floor (none of onnx-int8, onnx-fp16, ")
    assert "1,000 img/s at batch 64" in sel.reasons[0]
    assert "accuracy 0.9600, drop 2.00 points, 3,000 img/s" in _line(sel, "onnx-int8")
    assert INT8_MISS in _line(sel, "onnx-int8") and "> budget 1.00" in _line(sel, "onnx-int8")
    assert "accuracy 0.9500, drop 3.00 points, 2,000 img/s" in _line(sel, "onnx-fp16")
    assert _line(sel, "onnx-pruned-fp32") == "onnx-pruned-fp32: not measured (not produced)"
    assert not any(c.eligible for c in sel.candidates)
    assert Selection.model_validate_json(sel.model_dump_json()) == sel  # selection.json round trip


def test_without_the_fp32_floor_measured_nothing_eligible_is_an_error() -> None:
    with pytest.raises(
        NotFoundError, match=r"floor onnx-fp32 .* was not measured: onnx-int8: accuracy drop 5.00"
    ):
        choose({"onnx-int8": evaluation("onnx-int8", 0.93, 3000)}, 0.98, 1.0, skipped={FLOOR: "not produced"})


def test_rejected_and_not_measured_is_listed_with_the_upstream_reason() -> None:
    sel = choose({FLOOR: evaluation(FLOOR, 0.98, 1000)}, 0.98, 1.0, rejected={"onnx-int8": INT8_MISS})
    assert sel.chosen == FLOOR and not sel.floor  # onnx-fp32 is a candidate here, and eligible
    assert _line(sel, "onnx-int8") == f"onnx-int8: not measured ({INT8_MISS})"
    assert next(c for c in sel.candidates if c.format == "onnx-int8").rejected == INT8_MISS

"""The one number per step that `slipway run`'s step table shows, from outputs shaped as the steps write them."""

import pytest

from slipway.core.summary import key_number

CASES = [
    ("gate", {"Output": False, "decision": {"passed": False, "reasons": []}}, "rejected"),
    ("register", {"Output": "2"}, "version 2"),
    ("train-teacher", {"Output": 0.97, "model": {"best_val_accuracy": 0.97687}}, "val acc 0.9769"),
    (
        "prune-student",
        {"pruned_model": {"params_before": 5178, "params_after": 3022, "val_accuracy_finetuned": 0.85648}},
        "params 3,022 of 5,178 (58%), val acc 0.8565",
    ),
    (
        "quantize",
        {"int8_model": {"precision": "int8", "accuracy": 0.85, "rejected": "top-1 0.98"}, "fp16_model": {}},
        "int8 acc 0.8500 (rejected)",
    ),
    (
        "export-teacher",
        {
            "onnx_model": {
                "artifact": {"precision": "fp32", "size_bytes": 2243718},
                "parity": {"top1_agreement": 1},
            }
        },
        "fp32 2,191 KiB, parity 1.000",
    ),
    (
        "data",
        {"dataset": {"samples": {"train": 1221, "val": 216, "test": 360}}},
        "train 1,221 / val 216 / test 360",
    ),
    (
        "record",
        {"metrics": {"accuracy": 0.975, "macro_f1": 0.9748, "size_bytes": 71000}},
        "acc 0.9750, macro-F1 0.9748",
    ),
    ("record-search", {}, ""),
]


@pytest.mark.parametrize(("step", "outputs", "expected"), CASES, ids=[c[0] for c in CASES])
def test_key_number(step: str, outputs: dict, expected: str) -> None:
    assert key_number(step, outputs) == expected


def test_a_searched_prune_ratio_is_named() -> None:
    pruned = {
        "params_before": 5178, "params_after": 1442, "val_accuracy_finetuned": 0.98, "ratio": 0.5,
        "search": [{"ratio": 0.5}],
    }  # fmt: skip
    assert key_number("prune", {"pruned_model": pruned}).startswith(
        "ratio 0.5 (1 tried), params 1,442 of 5,178"
    )

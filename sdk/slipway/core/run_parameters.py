"""The few typed pipeline parameters people change per run, and the config key each one sets.

The full config travels as one `dict` parameter (a protobuf Struct, where every number is a double); these
travel with their KFP types, show as named fields in the KFP run form, and win over the config's value.
An empty string, 0 or -1 means "as in the config" (what a direct caller of the pipeline function gets);
the CLI fills each one from the resolved config, so the run form shows the values that will be used.
"""

from __future__ import annotations

from typing import Any

# parameter -> (dotted config key, the "as in the config" value)
RUN_PARAMETERS: dict[str, tuple[str, Any]] = {
    "data_source": ("data.source", ""),
    "teacher_epochs": ("train.epochs", 0),
    "student_epochs": ("distill.epochs", 0),
    "min_accuracy": ("gate.min_accuracy", -1.0),
    "max_accuracy_drop": ("gate.max_accuracy_drop", -1.0),
    "model_name": ("registry.model_name", ""),
}


def _get(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        node = node[part]
    return node


def from_config(raw: dict[str, Any], names: list[str] | None = None) -> dict[str, Any]:
    """The parameters' values as the resolved config (a model_dump) has them."""
    return {name: _get(raw, RUN_PARAMETERS[name][0]) for name in (RUN_PARAMETERS if names is None else names)}


def apply(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of the raw config with every parameter that is not "as in the config" written into it."""
    import copy

    out = copy.deepcopy(raw)
    for name, value in values.items():
        dotted, unset = RUN_PARAMETERS[name]
        if value == unset:
            continue
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out

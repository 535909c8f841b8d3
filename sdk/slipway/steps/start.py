"""The first step of every training pipeline: resolve the config, open this run's MLflow run, and hand each
cached step only the part of the config it reads.

KFP caches a step by its inputs. A step handed the whole config would re-run whenever any key changed (a gate
threshold would retrain the teacher); a step handed its MLflow run id would never hit the cache. So the cached
steps (data, training, export, compression, selection) get their own slice of the config and write their numbers
into their outputs, and the uncached steps (this one, record, gate, register, promote, package, deploy) own
every side effect: the MLflow run, the registry, the deployment.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from pydantic import BaseModel

from slipway import registry
from slipway.core import run_parameters
from slipway.core.config import SlipwayConfig, to_parameter, validate_config

# The config keys each cached step reads (dotted: a whole section or one key of it). A step's slice is its KFP
# input, so its cache key changes only when one of these does.
STEP_SLICES: dict[str, tuple[str, ...]] = {
    "data": ("seed", "data"),
    "teacher": ("name", "seed", "teacher", "train"),
    # The search (compress.search) distils and measures candidates: it reads evaluate and export too.
    "student": ("name", "seed", "student", "distill", "compress.search", "evaluate", "export"),
    "export": ("export",),
    "prune": ("seed", "compress.prune", "distill.checkpoint_dir"),
    "quantize": ("seed", "compress.quantize", "export.parity_samples", "evaluate.threads"),
    "aoti": ("compress.candidates", "export.parity_samples"),
    "select": ("evaluate", "compress.candidates", "compress.accuracy_budget_points"),
    "tensorrt": ("compress.tensorrt", "export.parity_samples"),
}


class RunStart(BaseModel):
    run_id: str
    run_key: str
    config: dict[str, Any]
    slices: dict[str, dict[str, Any]]


def config_slice(raw: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The part of a dumped config under `keys`; what is left out validates back to its defaults."""
    out: dict[str, Any] = {}
    for dotted in keys:
        *parents, leaf = dotted.split(".")
        src: Any = raw
        dst = out
        for part in parents:
            src = src.get(part, {})
            dst = dst.setdefault(part, {})
        if leaf in src:
            dst[leaf] = copy.deepcopy(src[leaf])
    return out


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value
    return out


def resolve(config: dict[str, Any], parameters: dict[str, Any]) -> SlipwayConfig:
    """The config with the typed run parameters applied, validated (errors name the key)."""
    return validate_config(run_parameters.apply(config, parameters))


def start_run(config: dict[str, Any], run_key: str, parameters: dict[str, Any], pipeline: str) -> RunStart:
    """Open a fresh MLflow run for this pipeline run (a new key when none was given) and cut the slices."""
    cfg = resolve(config, parameters)
    raw = to_parameter(cfg, exclude={"cluster"})
    run_key = run_key or uuid.uuid4().hex
    run_id = registry.start_run(cfg.registry, run_key, cfg.registry.artifact_location, _flatten("", raw, {}))
    registry.set_tags(cfg.registry, run_id, {"slipway.pipeline": pipeline})
    slices = {step: config_slice(raw, keys) for step, keys in STEP_SLICES.items()}
    return RunStart(run_id=run_id, run_key=run_key, config=raw, slices=slices)

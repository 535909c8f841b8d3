"""Typed pipeline configuration: validated when built, loaded from YAML or a named preset, `--set` overrides.

A wrong key or value raises ConfigError naming the dotted key and what was expected.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slipway.errors import ConfigError

PRESETS = ("quickstart",)


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(StrictModel):
    source: str = Field("digits", description="'digits', 'mnist1d', or a path to an .npz file with x, y")
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5, description="ignored when the npz holds x_test/y_test")
    reference_samples: int = Field(1000, ge=10, description="rows kept as the drift reference sample")
    max_train_samples: int | None = Field(None, ge=10, description="subsample training data (experiments)")


class ModelSpec(StrictModel):
    architecture: str = Field(
        description="zoo name (teacher_cnn, student_cnn, mlp) or 'package.module:function'"
    )
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(StrictModel):
    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(6, ge=1, description="stop after this many epochs without a better val accuracy")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    workers: int = Field(1, ge=1, le=64, description="processes for DistributedDataParallel (1: no DDP)")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads per process")
    checkpoint_dir: str | None = Field(
        None, description="stable folder: a rerun resumes from it (None: no resume)"
    )


class DistillConfig(TrainConfig):
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the soft (teacher) loss")


class ExportConfig(StrictModel):
    opset: int = Field(18, ge=17, le=23)
    parity_atol: float = Field(1e-4, gt=0, description="max abs logit difference, FP32")
    parity_min_agreement: float = Field(0.999, gt=0, le=1, description="top-1 agreement, FP32")
    parity_samples: int = Field(512, ge=1)


class EvaluateConfig(StrictModel):
    warmup: int = Field(10, ge=0)
    latency_iterations: int = Field(200, ge=10, description="batch-1 calls per repeat")
    throughput_iterations: int = Field(20, ge=1, description="batch-64 calls per repeat")
    repeats: int = Field(5, ge=1, description="the median over repeats is reported")
    threads: int | None = Field(None, ge=1, description="intra-op threads (None: all cores)")


class GateConfig(StrictModel):
    min_accuracy: float = Field(0.95, ge=0, le=1)
    max_accuracy_drop: float = Field(0.02, ge=0, le=1, description="student vs teacher, as a fraction")
    max_latency_ms_p99: float = Field(50.0, gt=0)
    champion_margin: float = Field(0.01, ge=0, le=1, description="allowed accuracy loss vs current champion")


class RegistryConfig(StrictModel):
    tracking_uri: str | None = Field(
        None, description="None: $MLFLOW_TRACKING_URI, else SQLite in the output"
    )
    experiment: str = "slipway"
    artifact_location: str | None = Field(
        None, description="for a new experiment; None: the server's default"
    )
    model_name: str = Field("slipway-quickstart", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class TritonConfig(StrictModel):
    max_batch_size: int = Field(64, ge=0)
    preferred_batch_sizes: list[int] = Field(default_factory=lambda: [8, 16, 32])
    max_queue_delay_us: int = Field(500, ge=0)
    instance_count: int = Field(1, ge=1)
    instance_kind: Literal["KIND_CPU", "KIND_GPU", "KIND_AUTO"] = "KIND_CPU"

    @model_validator(mode="after")
    def _preferred_within_max(self) -> TritonConfig:
        too_big = [b for b in self.preferred_batch_sizes if b > self.max_batch_size or b < 1]
        if self.max_batch_size and too_big:
            raise ValueError(f"preferred_batch_sizes {too_big} must lie in 1..max_batch_size")
        return self


class SlipwayConfig(StrictModel):
    name: str = Field("quickstart", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: ModelSpec = Field(default_factory=lambda: ModelSpec(architecture="teacher_cnn"))
    student: ModelSpec = Field(default_factory=lambda: ModelSpec(architecture="student_cnn"))
    train: TrainConfig = Field(default_factory=TrainConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    triton: TritonConfig = Field(default_factory=TritonConfig)


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(root)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check spelling; see `slipway config show`)")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "invalid configuration:\n" + "\n".join(lines)


def validate_config(raw: dict[str, Any]) -> SlipwayConfig:
    """Build a config from a plain dict (YAML, a KFP parameter); errors name the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration must be a mapping, got {type(raw).__name__}")
    try:
        return SlipwayConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def preset(name: str) -> dict[str, Any]:
    """The raw dict of a named preset shipped with the package."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    text = resources.files("slipway").joinpath("presets", f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `a.b=c` into (["a", "b"], parsed YAML value of c)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE with a dotted key, got {item!r}")
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: value {value!r} is not valid YAML: {err}") from None
    return [p for p in key.strip().split(".")], parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--set a.b=c` overrides to a raw config dict (a copy is returned)."""
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item}: {'.'.join(path[: i + 1])} is not a section")
            node = child
        node[path[-1]] = value
    return out


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> SlipwayConfig:
    """Load a preset name or a YAML file (default: the quickstart preset) and apply overrides."""
    if source is None or str(source) in PRESETS:
        raw = preset(str(source or "quickstart"))
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found; expected a YAML file or one of {PRESETS}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    return validate_config(apply_overrides(raw, overrides or []))

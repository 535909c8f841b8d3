"""What an A/B experiment is: two versions of one model, a traffic split, a primary metric, guardrails and limits.

One spec travels everywhere the experiment lives (the local server's repository, the cluster's InferenceGraph
annotation, the CLI), so it is validated once here; every error names the field and what was expected.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slipway.core.errors import ConfigError

Variant = Literal["a", "b"]
VARIANTS: tuple[Variant, ...] = ("a", "b")
Metric = Literal["accuracy", "score"]
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"  # a DNS label short enough for derived object names
VERSION_PATTERN = r"^[1-9][0-9]{0,17}$"  # Triton version folders and MLflow registry versions


class Guardrails(BaseModel):
    """Limits on the challenger (B) that stop the experiment whatever the primary metric says."""

    model_config = ConfigDict(extra="forbid")

    max_error_rate: float = Field(
        0.05, ge=0, le=1, description="share of B's requests answered with an error (any non-200)"
    )
    max_p99_ms: float | None = Field(None, gt=0, description="B's p99 latency limit; None: not checked")
    min_requests: int = Field(
        100, ge=1, description="B's requests before a guardrail is judged (fewer say too little)"
    )


class ExperimentSpec(BaseModel):
    """An experiment: A is the version serving today (the champion), B the one that may replace it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="lowercase letters, digits and '-', at most 40")
    model: str = Field(min_length=1, max_length=256)
    a: str = Field(pattern=VERSION_PATTERN, description="version of variant A (default: the champion)")
    b: str = Field(pattern=VERSION_PATTERN, description="version of variant B (default: the challenger)")
    b_share: float = Field(0.5, gt=0, lt=1, description="share of traffic assigned to B")
    metric: Metric = Field("accuracy", description="accuracy from feedback labels, or a per-request score")
    mde: float = Field(0.02, gt=0, description="minimum detectable effect, in the metric's units")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="false-winner rate the test guarantees")
    min_samples: int = Field(200, ge=1, description="labelled rows per variant before any verdict")
    max_samples: int | None = Field(None, ge=1, description="labelled rows per variant at which it ends")
    max_duration_s: float = Field(7 * 86400.0, gt=0, description="seconds after which it ends undecided")
    guardrails: Guardrails = Field(default_factory=Guardrails)
    started_at: float = Field(0.0, ge=0, description="unix time; set when the experiment starts")

    def version_of(self, variant: Variant) -> str:
        return self.a if variant == "a" else self.b

    def variant_of(self, version: str) -> Variant | None:
        return "a" if version == self.a else "b" if version == self.b else None


def parse_spec(data: Any, where: str = "experiment") -> ExperimentSpec:
    """Validate a spec from JSON or YAML; a bad field becomes a ConfigError naming it (never a pydantic dump)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{where}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r:.60})"
            for e in err.errors()
        )
        raise ConfigError(problems) from None
    if spec.a == spec.b:
        raise ConfigError(f"{where}.b: must differ from a (both are version {spec.a})")
    if spec.max_samples is not None and spec.max_samples < spec.min_samples:
        raise ConfigError(f"{where}.max_samples: must be >= min_samples ({spec.min_samples})")
    return spec


def assign(experiment: str, key: str, b_share: float) -> Variant:
    """The variant of one assignment key: the same key always lands on the same variant (sticky), and keys
    spread uniformly, so a share of keys, not of requests, sees B."""
    digest = hashlib.sha256(f"{experiment}\0{key}".encode()).digest()
    return "b" if int.from_bytes(digest[:8], "big") / 2**64 < b_share else "a"


@dataclass(frozen=True)
class Moments:
    """The primary metric of one variant: labelled (or scored) rows, their mean and sample variance."""

    n: int
    mean: float
    var: float


@dataclass(frozen=True)
class Health:
    """What the guardrails read for one variant: requests, errors (non-200 answers) and p99 latency."""

    requests: int
    errors: int
    p99_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

"""The A/B split of one served model: its experiment spec and a loaded version per variant, persisted beside
the model as `REPO/<model>/experiment.json`, so that a server restarted mid-experiment keeps splitting.

Triton reads only `config.pbtxt` and the numeric version folders of a model folder, so the file disturbs no
Triton server reading the same repository. The file is the spec itself (`slipway.experiments.spec`), written
atomically (a temporary file, then `os.replace`); one that no longer parses, or that names a version the
folder lacks, refuses the model like a bad config does, naming the file.

Each request is assigned with `assign(experiment, key, b_share)`: the same key always lands on the same
variant. What the key is (the `experiment_key` parameter, a header, the request id) is the front ends' part.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slipway.core.errors import ConfigError, SlipwayError, StoreError
from slipway.experiments.spec import VARIANTS, ExperimentSpec, Variant, assign, parse_spec
from slipway.serving.loader import LoadedModel, SessionOptions, load_model_dir

log = logging.getLogger(__name__)

EXPERIMENT_FILE = "experiment.json"
KEY_PARAMETER = "experiment_key"  # request parameter (HTTP and gRPC): the client's sticky assignment key
KEY_HEADER = "slipway-experiment-key"  # HTTP header: the same, for clients that cannot set parameters


@dataclass
class VariantCounts:
    """Assigned requests of one variant since the experiment was started (or resumed) here, and the non-200."""

    requests: int = 0
    errors: int = 0


@dataclass
class Experiment:
    """One model's split: the spec and the loaded version of each variant, with their request counts."""

    spec: ExperimentSpec
    models: dict[Variant, LoadedModel]
    counts: dict[Variant, VariantCounts] = field(
        default_factory=lambda: {variant: VariantCounts() for variant in VARIANTS}
    )

    @property
    def name(self) -> str:
        return self.spec.name

    def assign(self, key: str | None) -> Assignment:
        """The variant of one request: by its key (sticky), or at random without one (a fresh uuid)."""
        variant = assign(self.spec.name, key or uuid.uuid4().hex, self.spec.b_share)
        return Assignment(self, variant)

    def model_of_version(self, version: str) -> LoadedModel | None:
        variant = self.spec.variant_of(version)
        return None if variant is None else self.models[variant]

    def versions(self) -> list[LoadedModel]:
        """Both loaded versions, oldest first (how Triton lists a model's versions)."""
        return sorted(self.models.values(), key=lambda model: int(model.version))

    def record(self, variant: Variant, ok: bool) -> None:
        counts = self.counts[variant]
        counts.requests += 1
        counts.errors += 0 if ok else 1

    def describe(self) -> str:
        return f"experiment {self.name!r} (A = version {self.spec.a}, B = version {self.spec.b})"

    def status(self) -> dict[str, Any]:
        """What `GET /v2/models/<m>/experiment` answers: the spec and, per variant, version and counts."""
        return {
            "spec": self.spec.model_dump(mode="json"),
            "variants": {
                variant: {
                    "version": self.spec.version_of(variant),
                    "requests": self.counts[variant].requests,
                    "errors": self.counts[variant].errors,
                }
                for variant in VARIANTS
            },
        }


@dataclass(frozen=True)
class Assignment:
    """One inference request's variant: the version that answers it and what its response says."""

    experiment: Experiment
    variant: Variant

    @property
    def model(self) -> LoadedModel:
        return self.experiment.models[self.variant]

    def parameters(self) -> dict[str, str]:
        """The response parameters that name the variant (HTTP JSON header, gRPC string parameters)."""
        return {"experiment": self.experiment.name, "variant": self.variant}


def experiment_file(model_dir: str | Path) -> Path:
    return Path(model_dir) / EXPERIMENT_FILE


def read_experiment(model_dir: str | Path) -> ExperimentSpec | None:
    """The experiment persisted in a model folder, or None; a file that does not parse is a ConfigError
    naming it and the field."""
    path = experiment_file(model_dir)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{path}: not a readable experiment ({err}); fix it, or delete it to serve the newest version"
        ) from None
    spec = parse_spec(data, f"{path}: experiment")
    if spec.model != Path(model_dir).name:
        raise ConfigError(
            f"{path}: experiment.model {spec.model!r} differs from its folder {Path(model_dir).name!r}"
        )
    return spec


def write_experiment(model_dir: str | Path, spec: ExperimentSpec) -> Path:
    """Persist the spec atomically (temporary file + os.replace): a reader sees the old file or the new one."""
    path = experiment_file(model_dir)
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".experiment-", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as out:
            json.dump(spec.model_dump(mode="json"), out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            if tmp:
                os.unlink(tmp)
        raise StoreError(f"cannot write {path}: {err}") from None
    return path


def remove_experiment(model_dir: str | Path) -> None:
    path = experiment_file(model_dir)
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        raise StoreError(f"cannot remove {path}: {err}") from None


def load_variants(
    model_dir: str | Path,
    spec: ExperimentSpec,
    options: SessionOptions | None = None,
    reuse: Iterable[LoadedModel] = (),
    where: str = "experiment",
) -> dict[Variant, LoadedModel]:
    """Load version A and version B (blocking: verify, ORT sessions), reusing a loaded model of the same
    version; a failure names the variant's field (`experiment.b (version 7): ...`)."""
    loaded = {model.version: model for model in reuse}
    models: dict[Variant, LoadedModel] = {}
    for variant in VARIANTS:
        version = spec.version_of(variant)
        model = loaded.get(version)
        if model is None:
            try:
                model = load_model_dir(model_dir, options, int(version))
            except SlipwayError as err:
                raise type(err)(f"{where}.{variant} (version {version}): {err}") from None
        models[variant] = model
    return models


def resume_experiments(
    repo: str | Path, names: Iterable[str], options: SessionOptions | None = None
) -> dict[str, Experiment]:
    """The experiments persisted for the models a server starts with, both versions loaded; a file that no
    longer parses or names a missing version stops the server from starting, naming the file."""
    experiments: dict[str, Experiment] = {}
    for name in names:
        model_dir = Path(repo) / name
        spec = read_experiment(model_dir)
        if spec is None:
            continue
        where = f"{experiment_file(model_dir)}: experiment"
        experiments[name] = Experiment(spec, load_variants(model_dir, spec, options, where=where))
        log.info(
            "experiment resumed name=%s model=%s a=%s b=%s b_share=%s",
            spec.name,
            name,
            spec.a,
            spec.b,
            spec.b_share,
        )
    return experiments


def hide_version_dir(model_dir: str | Path, version: str) -> Path:
    """Move a version folder out of the repository's sight in one rename (a non-numeric name, which neither
    this server nor Triton reads as a version), so that no load sees half of it; returns where it went."""
    source = Path(model_dir) / version
    hidden = Path(model_dir) / f".removed-{version}-{uuid.uuid4().hex[:8]}"
    try:
        os.replace(source, hidden)
    except OSError as err:
        raise StoreError(f"cannot remove version folder {source}: {err}") from None
    return hidden


def restore_version_dir(hidden: Path, model_dir: str | Path, version: str) -> None:
    with contextlib.suppress(OSError):
        os.replace(hidden, Path(model_dir) / version)


def delete_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

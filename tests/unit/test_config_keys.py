"""Every accepted config key does something: partial sections keep their defaults, dead keys are rejected,
and an audit fails when a schema key is read nowhere in the package."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import BaseModel
from torch import nn

from slipway.core.config import (
    DistillConfig,
    DistributedConfig,
    FinetuneConfig,
    SlipwayConfig,
    load_config,
    validate_config,
)
from slipway.core.errors import ConfigError
from slipway.core.schema import StrictModel
from slipway.training.loop import distillation_loss, train

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("sdk/slipway",)
SCHEMA_FILES = ("sdk/slipway/core/config.py", "sdk/slipway/core/cluster_config.py")

# Keys read in a way an attribute search cannot see (getattr with a string, a model_dump() passed on).
# Each entry: dotted key -> where it is read. Empty: every key is read as `.name` today.
READ_UNSEEN: dict[str, str] = {}


# ----------------------------------------------------------------------------------------------------------
# Partial sections keep the enclosing defaults


def test_partial_finetune_section_keeps_its_defaults(tmp_path: Path) -> None:
    """The user's report: `finetune: {temperature: 2}` reset epochs and lr to DistillConfig's 30 and 3e-3."""
    path = tmp_path / "c.yaml"
    path.write_text("compress:\n  prune:\n    finetune:\n      temperature: 2\n")
    finetune = load_config(path).compress.prune.finetune
    assert (finetune.epochs, finetune.lr, finetune.patience) == (15, 1e-3, 6)
    assert finetune.temperature == 2
    assert finetune == SlipwayConfig().compress.prune.finetune.model_copy(update={"temperature": 2.0})


def test_partial_distributed_section_keeps_the_other_defaults() -> None:
    cfg = validate_config({"train": {"epochs": 3, "distributed": {"num_nodes": 2}}})
    assert cfg.train.distributed == DistributedConfig(num_nodes=2)
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 64
    assert cfg.distill.distributed == DistributedConfig()


def test_partial_model_spec_keeps_its_architecture() -> None:
    cfg = validate_config({"teacher": {"kwargs": {"width": 8}}})
    assert (cfg.teacher.architecture, cfg.teacher.kwargs) == ("teacher_cnn", {"width": 8})


def test_lists_and_free_form_mappings_replace_the_default() -> None:
    cfg = validate_config(
        {
            "triton": {"preferred_batch_sizes": [4]},
            "cluster": {"gpu": {"node_selector": {"pool": "gpu"}}},
            "train": {"distributed": {"env": {"A": "1"}}},
        }
    )
    assert cfg.triton.preferred_batch_sizes == [4]
    assert cfg.cluster.gpu.node_selector == {"pool": "gpu"}
    assert cfg.train.distributed.env == {"A": "1"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"compress": {"prune": {"finetune": None}}},
            r"compress\.prune\.finetune: Input should be a valid dict",
        ),
        ({"train": {"distributed": 3}}, r"train\.distributed: Input should be a valid dict"),
        ({"seed": {"a": 1}}, r"seed: Input should be a valid integer"),
        ({"train": {"distributed": {"num_nodez": 2}}}, r"train\.distributed\.num_nodez: unknown key"),
        ({"nope": {"a": 1}}, r"nope: unknown key"),
    ],
)
def test_a_wrong_shape_is_still_an_error_naming_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(raw)


def test_enclosing_defaults_are_the_sections_own_defaults() -> None:
    """A compact dump (`exclude_defaults`, the cluster training request) leaves out what equals the section
    class's default; it reads back right only if that is also the default where the section sits."""
    # teacher/student: `architecture` has no class default, so a dump always keeps it; `cluster` merges its
    # partial sections itself (core/cluster_config.py `_over_defaults`).
    skip = {"teacher", "student", "cluster"}

    def sections(model: BaseModel, prefix: str):
        for name, value in model:
            if isinstance(value, BaseModel) and f"{prefix}{name}" not in skip:
                yield f"{prefix}{name}", value
                yield from sections(value, f"{prefix}{name}.")

    found = dict(sections(SlipwayConfig(), ""))
    assert "compress.prune.finetune" in found and "train.distributed" in found
    for dotted, value in found.items():
        assert value == type(value)(), f"{dotted}: default differs from {type(value).__name__}()"


# ----------------------------------------------------------------------------------------------------------
# Dead keys: removed (an unknown key, named), or implemented


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("compress.prune.finetune.workers=2", "compress.prune.finetune.workers"),
        ("compress.prune.finetune.sync_batchnorm=false", "compress.prune.finetune.sync_batchnorm"),
        ("compress.prune.finetune.distributed.num_nodes=2", "compress.prune.finetune.distributed"),
        ("compress.tensorrt.enabled=true", "compress.tensorrt.enabled"),
    ],
)
def test_keys_that_did_nothing_are_unknown_keys(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{key}: unknown key")):
        load_config("quickstart", [override])


def test_label_smoothing_smooths_the_hard_term_of_the_distillation_loss() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(16, 10), torch.randn(16, 10)
    labels = torch.randint(0, 10, (16,))
    plain = distillation_loss(student, teacher, labels, 4.0, 0.7)
    smooth = distillation_loss(student, teacher, labels, 4.0, 0.7, label_smoothing=0.2)
    soft_only = distillation_loss(student, teacher, labels, 4.0, 1.0)
    hard = torch.nn.functional.cross_entropy(student, labels, label_smoothing=0.2)
    assert not torch.isclose(plain, smooth)
    assert torch.isclose(smooth, 0.7 * soft_only + 0.3 * hard)
    assert torch.isclose(
        soft_only, distillation_loss(student, teacher, labels, 4.0, 1.0, label_smoothing=0.2)
    )


def _first_epoch_loss(cfg: DistillConfig | FinetuneConfig, tmp_path: Path) -> float:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    torch.manual_seed(0)
    teacher = nn.Linear(6, 3)
    torch.manual_seed(1)
    student = nn.Linear(6, 3)
    result = train(student, x, y, x[:16], y[:16], cfg, 0, tmp_path, teacher=teacher, label="t")
    return result.history[0]["loss"]


@pytest.mark.parametrize("section", [DistillConfig, FinetuneConfig])
def test_label_smoothing_reaches_distillation_in_training(section: type, tmp_path: Path) -> None:
    """distill.label_smoothing and compress.prune.finetune.label_smoothing both change the training loss;
    with alpha=1 (soft loss only) they change nothing, which shows the loop distils for both sections."""

    def loss(alpha: float, smoothing: float) -> float:
        cfg = section(epochs=1, batch_size=32, alpha=alpha, label_smoothing=smoothing)
        return _first_epoch_loss(cfg, tmp_path / f"{alpha}-{smoothing}")

    assert loss(0.5, 0.0) != pytest.approx(loss(0.5, 0.3))
    assert loss(1.0, 0.0) == pytest.approx(loss(1.0, 0.3))


# ----------------------------------------------------------------------------------------------------------
# Audit: every schema key is read somewhere in the package


def _models_of(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_of(arg)]


def leaf_keys(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """Dotted key -> field name for every leaf of the schema (lists of models are walked into)."""
    out: dict[str, str] = {}
    for name, field in model.model_fields.items():
        models = _models_of(field.annotation)
        if not models:
            out[f"{prefix}{name}"] = name
        for sub in models:
            out |= leaf_keys(sub, f"{prefix}{name}.")
    return out


def attributes_read(root: Path) -> set[str]:
    """Names used as `.name` in the package's code (strings and comments do not count), schema files aside."""
    names: set[str] = set()
    for folder in PACKAGE_DIRS:
        for path in (root / folder).rglob("*.py"):
            if path.relative_to(root).as_posix() in SCHEMA_FILES:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    return names


def unread_keys(model: type[BaseModel], read: set[str]) -> list[str]:
    return sorted(k for k, name in leaf_keys(model).items() if name not in read and k not in READ_UNSEEN)


def test_every_config_key_is_read_somewhere() -> None:
    """A name-level check: it catches a key nothing reads; a key read in one section but not in another
    (label_smoothing in distill) needs a behaviour test like those above."""
    unread = unread_keys(SlipwayConfig, attributes_read(ROOT))
    assert not unread, f"config keys no code reads (implement, remove, or allow-list with where): {unread}"


def test_the_allow_list_is_current() -> None:
    keys, read = leaf_keys(SlipwayConfig), attributes_read(ROOT)
    assert not [k for k in READ_UNSEEN if k not in keys], "allow-listed keys that left the schema"
    assert not [k for k in READ_UNSEEN if keys[k] in read], "allow-listed keys now read as attributes"


def test_the_audit_catches_an_unread_key() -> None:
    class WithDeadKey(StrictModel):
        never_read_by_slipway: int = 0

    class Probe(SlipwayConfig):
        extra_section: WithDeadKey = WithDeadKey()

    assert unread_keys(Probe, attributes_read(ROOT)) == ["extra_section.never_read_by_slipway"]

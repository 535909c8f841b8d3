"""`cluster.checkpoints`: GPU steps mount a PVC and the compiled config points the checkpoint folders at it.

Checked on the compiled IR of every pipeline (kfp-kubernetes puts PVC mounts in the platform spec, the second
YAML document); no cluster runs here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from slipway.cli.compile import compile_pipeline, runtime_config
from slipway.core.cluster_config import CHECKPOINT_MOUNT_PATH_ENV, CHECKPOINT_PVC_ENV, STEP_KIND_LABEL
from slipway.core.config import load_config
from slipway.core.errors import ConfigError
from slipway.pipelines import PIPELINES

CLAIM = ["cluster.checkpoints.pvc=ckpt"]
CHECKPOINT_KEYS = ("train", "distill", "compress.prune.finetune")


def _compile(tmp_path: Path, pipeline: str, overrides: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline spec and its Kubernetes platform spec (executor label -> settings)."""
    entry = PIPELINES[pipeline]
    out = compile_pipeline(entry, load_config(entry.preset, overrides), tmp_path / f"{pipeline}.yaml")
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _checkpoint_dirs(spec: dict[str, Any]) -> dict[str, str | None]:
    """The three checkpoint folders in the compiled `config` default (None: unset, left out of it)."""
    config = spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    found = {}
    for key in CHECKPOINT_KEYS:
        section = config
        for part in key.split("."):
            section = section[part]
        found[key] = section.get("checkpoint_dir")
    return found


def _env(spec: dict[str, Any], executor: str) -> dict[str, str]:
    container = spec["deploymentSpec"]["executors"][executor]["container"]
    return {item["name"]: item["value"] for item in container.get("env", [])}


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_gpu_steps_and_only_they_mount_the_claim(tmp_path: Path, pipeline: str) -> None:
    spec, executors = _compile(tmp_path, pipeline, CLAIM)
    kinds = {
        label: settings["podMetadata"]["labels"][STEP_KIND_LABEL] for label, settings in executors.items()
    }
    for label, settings in executors.items():
        mounts = settings.get("pvcMount", [])
        if kinds[label] == "gpu":
            assert [(m["constant"], m["mountPath"]) for m in mounts] == [("ckpt", "/checkpoints")], label
            assert _env(spec, label)[CHECKPOINT_PVC_ENV] == "ckpt"
            assert _env(spec, label)[CHECKPOINT_MOUNT_PATH_ENV] == "/checkpoints"
        else:
            assert not mounts, f"{label} ({kinds[label]}) mounts the checkpoint claim"
            assert CHECKPOINT_PVC_ENV not in _env(spec, label)
    if pipeline == "quickstart":
        assert {kinds[e] for e in ("exec-train-teacher", "exec-search-student", "exec-prune")} == {"gpu"}


def test_the_compiled_config_puts_checkpoints_on_the_claim(tmp_path: Path) -> None:
    spec, _ = _compile(tmp_path, "quickstart", [*CLAIM, "cluster.checkpoints.mount_path=/mnt/ckpt"])
    assert _checkpoint_dirs(spec) == dict.fromkeys(CHECKPOINT_KEYS, "/mnt/ckpt/quickstart")
    config = spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert "cluster" not in config  # the claim's name stays a compile-time setting


def test_without_a_claim_nothing_changes(tmp_path: Path) -> None:
    """No mount, no environment, unset folders; and the mount path alone changes nothing."""
    spec, executors = _compile(tmp_path, "quickstart", ["cluster.checkpoints.mount_path=/mnt/ckpt"])
    assert not any("pvcMount" in settings for settings in executors.values())
    assert all(CHECKPOINT_PVC_ENV not in _env(spec, label) for label in spec["deploymentSpec"]["executors"])
    assert _checkpoint_dirs(spec) == dict.fromkeys(CHECKPOINT_KEYS)
    config = spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert config == runtime_config(load_config("quickstart"))


def test_a_checkpoint_dir_the_user_set_is_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="slipway.pipelines.platform")
    overrides = [*CLAIM, "train.checkpoint_dir=/checkpoints/teachers", "distill.checkpoint_dir=/scratch/s"]
    spec, _ = _compile(tmp_path, "quickstart", overrides)
    assert _checkpoint_dirs(spec) == {
        "train": "/checkpoints/teachers",
        "distill": "/scratch/s",
        "compress.prune.finetune": "/checkpoints/quickstart",
    }
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and warned[0].startswith(
        "distill.checkpoint_dir=/scratch/s is not under the claim"
    )


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        (
            "cluster.checkpoints.pvc=Checkpoints_1",
            "cluster.checkpoints.pvc: .*is not a PersistentVolumeClaim name",
        ),
        (
            "cluster.checkpoints.mount_path=checkpoints",
            "cluster.checkpoints.mount_path: .*normalised absolute",
        ),
        (
            "cluster.checkpoints.mount_path=/data/../ckpt",
            "cluster.checkpoints.mount_path: .*normalised absolute",
        ),
        ("cluster.checkpoints.mount_path=/", "cluster.checkpoints.mount_path: .*would hide"),
        (
            "cluster.checkpoints.mount_path=/tmp/ckpt",
            r"cluster.checkpoints.mount_path: .*would hide \['/tmp'\]",
        ),
        ("cluster.checkpoints.claim=ckpt", "cluster.checkpoints.claim"),
    ],
)
def test_bad_settings_name_the_key(assignment: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("quickstart", [assignment])

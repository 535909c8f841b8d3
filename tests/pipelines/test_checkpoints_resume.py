"""A retried training step resumes from the checkpoint claim: the compiled config's teacher slice, run twice
in two fresh output folders (two pods) that share only the claim's folder, the first run killed after epoch 2.

The claim is a folder under tmp_path standing in for the PVC (what the pod sees at `/checkpoints`); no
cluster runs here. `tests/unit/test_training.py` proves that a resumed loop matches an uninterrupted one.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

from slipway.cli.compile import compile_pipeline
from slipway.core import data as data_lib
from slipway.core.config import load_config, validate_config
from slipway.pipelines import get_pipeline
from slipway.steps import train as train_step
from slipway.steps.start import STEP_SLICES, config_slice
from slipway.training.loop import CHECKPOINT

EPOCHS, KILLED_AFTER = 4, 2


class PodKilled(Exception):
    """Stands in for a preempted node: the step's process dies between epochs."""


def _teacher_slice(tmp_path: Path, overrides: list[str], claim: Path) -> dict[str, Any]:
    """What the compiled pipeline hands the teacher step, with the claim's mount path moved to `claim`."""
    cfg = load_config("quickstart", overrides)
    out = compile_pipeline(get_pipeline("quickstart"), cfg, tmp_path / "quickstart.yaml")
    spec = next(yaml.safe_load_all(out.read_text()))
    raw = config_slice(
        spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"], STEP_SLICES["teacher"]
    )
    folder = raw["train"].get("checkpoint_dir")
    if folder is not None:
        raw["train"]["checkpoint_dir"] = str(claim / Path(folder).relative_to("/checkpoints"))
    return raw


def _output_folder(path: Path) -> Path:
    """A fresh pod's output folder (KFP creates it before the step runs)."""
    path.mkdir(parents=True)
    return path


@pytest.mark.parametrize("with_claim", [True, False], ids=["claim", "no-claim"])
def test_a_retried_teacher_step_resumes_from_the_claim(
    tmp_path: Path, fast_overrides: list[str], monkeypatch: pytest.MonkeyPatch, with_claim: bool
) -> None:
    # The small mlp teacher keeps the runs quick: what is tested is where the checkpoints live.
    overrides = [
        *fast_overrides,
        "teacher.architecture=mlp",
        f"train.epochs={EPOCHS}",
        f"train.patience={EPOCHS}",
    ]
    claim = tmp_path / "claim"
    claim_setting = ["cluster.checkpoints.pvc=ckpt"] if with_claim else []
    cfg = validate_config(_teacher_slice(tmp_path, [*overrides, *claim_setting], claim))
    dataset = tmp_path / "dataset.npz"
    full = load_config("quickstart", overrides)
    data_lib.save_splits(data_lib.load_dataset(full.data, full.seed), dataset)

    def killed_after(epoch: int, _metrics: dict[str, float]) -> None:
        if epoch == KILLED_AFTER:
            raise PodKilled

    with monkeypatch.context() as patch:
        patch.setattr(train_step, "train", functools.partial(train_step.train, on_epoch=killed_after))
        with pytest.raises(PodKilled):
            train_step.train_teacher(cfg, dataset, _output_folder(tmp_path / "attempt-1") / "model.pt")
    retried = train_step.train_teacher(cfg, dataset, _output_folder(tmp_path / "attempt-2") / "model.pt")

    assert retried.epochs_run == EPOCHS and (tmp_path / "attempt-2" / "model.pt").is_file()
    if with_claim:
        assert retried.resumed_from_epoch == KILLED_AFTER
        assert [p.parent.parent for p in claim.glob(f"*/teacher-*/{CHECKPOINT}")] == [claim / "quickstart"]
        assert not (tmp_path / "attempt-1" / "teacher-checkpoints").exists()
    else:  # checkpoints stayed in the first pod's output folder: the retry starts over
        assert retried.resumed_from_epoch is None
        assert (tmp_path / "attempt-1" / "teacher-checkpoints" / CHECKPOINT).is_file()

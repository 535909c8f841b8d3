"""DDP in the library: real `torchrun` processes on the CPU (gloo), against the single-process loop.

Every multi-process test here starts real torchrun workers through `slipway.training.distributed.launch`; the workers
import `ddp_fit` from this very module (its folder is put on PYTHONPATH), so both sides run the same code.
An interruption is simulated on every rank at once: a forward pre-hook raises at the first training batch of
epoch k (the epoch is read back from the per-epoch seed), after epoch k's checkpoint was written.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from slipway.core.config import TrainConfig, load_config
from slipway.core.errors import SlipwayError, TrainingError
from slipway.training import distributed

HERE = Path(__file__).resolve().parent
EPOCHS = 4
INTERRUPT_AFTER = 2
SEED = 0
EPOCH_SEED = 100_003  # training.train reseeds every epoch with seed * 100_003 + epoch


class SimulatedInterruption(SlipwayError):
    """Raised on every rank at the same batch, so no rank waits for a peer in a collective."""


def _interrupt_at_epoch(model: torch.nn.Module, epoch: int) -> None:
    def hook(module: torch.nn.Module, _inputs: Any) -> None:
        if module.training and torch.initial_seed() - SEED * EPOCH_SEED >= epoch:
            raise SimulatedInterruption(f"simulated interruption before epoch {epoch + 1}")

    model.register_forward_pre_hook(hook)


def ddp_fit(checkpoint_dir: str, interrupt_after: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """Train the quickstart teacher on digits for EPOCHS (every rank runs this); test accuracy of the result."""
    from slipway.core import data as data_lib
    from slipway.core.models import build_model
    from slipway.training.loop import accuracy, train

    cfg = load_config("quickstart", [f"train.epochs={EPOCHS}", f"train.device={device}"])
    splits = data_lib.load_dataset(cfg.data, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.teacher, splits.input_shape, splits.num_classes)
    if interrupt_after is not None:
        _interrupt_at_epoch(model, interrupt_after)
    result = train(
        model,
        splits.x_train,
        splits.y_train,
        splits.x_val,
        splits.y_val,
        cfg.train,
        cfg.seed,
        checkpoint_dir,
        label="ddp-test",
    )
    return {
        "world_size": distributed.current("cpu").world_size,
        "test_accuracy": accuracy(model, splits.x_test, splits.y_test),
        "best_val_accuracy": result.best_val_accuracy,
        "resumed_from_epoch": result.resumed_from_epoch,
        "epochs_run": result.epochs_run,
    }


@pytest.fixture
def worker_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let torchrun workers import this module."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), *sys.path]))


def _in_process(checkpoint_dir: Path, interrupt_after: int | None = None) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same thread budget as one DDP worker on these 2 cores
    try:
        return ddp_fit(str(checkpoint_dir), interrupt_after)
    finally:
        torch.set_num_threads(threads)


def _launch(checkpoint_dir: Path, interrupt_after: int | None = None) -> dict[str, Any]:
    return distributed.launch(
        f"{__name__.rpartition('.')[2]}:ddp_fit",
        {"checkpoint_dir": str(checkpoint_dir), "interrupt_after": interrupt_after, "device": "cpu"},
        2,
        threads_per_process=1,
        timeout_s=600,
    )


def test_two_processes_match_one_and_resume_across_world_sizes(tmp_path: Path, worker_path: None) -> None:
    """2 gloo processes reach 1 process's test accuracy (within 1 point); checkpoints resume 2 -> 1 and 1 -> 2."""
    one = _in_process(tmp_path / "one")
    two = _launch(tmp_path / "two")
    assert two["world_size"] == 2 and two["resumed_from_epoch"] is None and two["epochs_run"] == EPOCHS
    assert abs(two["test_accuracy"] - one["test_accuracy"]) <= 0.01, (one, two)

    # 2 processes, interrupted after INTERRUPT_AFTER epochs: the message of rank 0's SlipwayError comes back.
    with pytest.raises(TrainingError, match="simulated interruption before epoch 3"):
        _launch(tmp_path / "two-then-one", INTERRUPT_AFTER)
    checkpoint = torch.load(tmp_path / "two-then-one" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == INTERRUPT_AFTER and checkpoint["world_size"] == 2
    assert not any(k.startswith("module.") for k in checkpoint["model"]), (
        "checkpoint must hold the bare model"
    )
    two_then_one = _in_process(tmp_path / "two-then-one")

    # 1 process interrupted, 2 processes finish the run.
    with pytest.raises(SimulatedInterruption):
        _in_process(tmp_path / "one-then-two", INTERRUPT_AFTER)
    one_then_two = _launch(tmp_path / "one-then-two")

    assert one["world_size"] == 1 and two_then_one["world_size"] == 1 and one_then_two["world_size"] == 2
    for resumed in (two_then_one, one_then_two):
        assert resumed["resumed_from_epoch"] == INTERRUPT_AFTER and resumed["epochs_run"] == EPOCHS
        assert abs(resumed["test_accuracy"] - one["test_accuracy"]) <= 0.01, (one, resumed)
    assert one["test_accuracy"] > 0.9


def test_shards_partition_every_global_batch() -> None:
    """Every sample of a global batch lands on exactly one rank, whatever the world size."""
    from slipway.training.loop import _shard

    idx = torch.randperm(67)
    for world in (1, 2, 3, 8):
        envs = [distributed.DistEnv(r, r, world, torch.device("cpu"), "gloo") for r in range(world)]
        shards = [_shard(idx, env) for env in envs]
        assert sorted(torch.cat(shards).tolist()) == sorted(idx.tolist())
        assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1


def test_a_plain_process_is_a_world_of_one() -> None:
    env = distributed.current("cpu")
    assert (env.rank, env.world_size, env.distributed, env.is_main) == (0, 1, False, True)
    assert distributed.broadcast_object({"a": 1}, env) == {"a": 1}


def test_joining_without_torchrun_names_the_missing_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(TrainingError, match=r"not started by torchrun.*RANK"):
        distributed.init_process_group("cpu")


def test_cuda_requested_without_a_gpu_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: the error path cannot be exercised")
    with pytest.raises(TrainingError, match="no CUDA GPU is visible"):
        distributed.resolve_device("cuda")


def test_launcher_command_is_standalone_torchrun_on_loopback() -> None:
    command = distributed.torchrun_command(3, "slipway.training.worker", ["req.json"])
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in command and command[command.index("--nproc-per-node") + 1] == "3"
    assert command[command.index("--local-addr") + 1] == "127.0.0.1"
    assert command[-3:] == ["-m", "slipway.training.worker", "req.json"]


def test_new_train_fields_validate() -> None:
    cfg = TrainConfig.model_validate({"precision": "bf16", "device": "cpu"})
    assert (cfg.precision, cfg.device, cfg.sync_batchnorm) == ("bf16", "cpu", True)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig.model_validate({"precision": "fp8"})
    with pytest.raises(ValueError, match="secret-name:key"):
        TrainConfig.model_validate({"distributed": {"secret_env": {"AWS_SECRET_ACCESS_KEY": "no-key"}}})


@pytest.mark.slow
def test_train_step_with_two_workers_writes_the_model(tmp_path: Path, fast_config) -> None:
    """`train.workers=2` in the pipeline step: real DDP, rank 0 writes the model and logs to MLflow."""
    from slipway import registry, steps
    from slipway.core import data as data_lib
    from slipway.core.models import load_model

    cfg = fast_config.model_copy(deep=True)
    cfg.train.workers = 2
    dataset = tmp_path / "dataset.npz"
    data_lib.save_splits(data_lib.load_dataset(cfg.data, cfg.seed), dataset)
    run_id = registry.start_run(cfg.registry, "ddp-step", cfg.registry.artifact_location, {})
    result = steps.train_teacher(cfg, run_id, dataset, tmp_path / "teacher.pt")
    model, _ = load_model(tmp_path / "teacher.pt")
    assert result.epochs_run == cfg.train.epochs and result.best_val_accuracy > 0.5
    assert sum(p.numel() for p in model.parameters()) > 0


def test_a_hung_launch_times_out_and_kills_its_workers(tmp_path: Path, worker_path: None) -> None:
    """A worker that never returns: the launcher kills the whole torchrun session at the timeout."""
    started = time.monotonic()
    with pytest.raises(TrainingError, match="timed out after 3"):
        distributed.launch(f"{__name__.rpartition('.')[2]}:sleep_forever", {}, 1, timeout_s=3)
    assert time.monotonic() - started < 60


def sleep_forever() -> None:
    time.sleep(3600)

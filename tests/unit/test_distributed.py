"""DDP in the library: real `torchrun` processes on the CPU (gloo), against the single-process loop.

Every multi-process test here starts real torchrun workers through `slipway.training.distributed.launch`; the workers
import `ddp_fit` from this very module (its folder is put on PYTHONPATH), so both sides run the same code.
An interruption is simulated on every rank at once: a forward pre-hook raises at the first training batch of
epoch k (the epoch is read back from the per-epoch seed), after epoch k's checkpoint was written.

Equality across world sizes is checked on the BatchNorm-free `mlp`: with the same seed every world size
trains on the same global batches, so 1 and 2 processes compute the same gradients up to float summation
order. The quickstart teacher has BatchNorm, which on gloo normalises each rank's own slice: its 2-process
run is checked for identical ranks (exact) and for an accuracy bound (a binomial tail, see below).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from chance import max_errors

from slipway.core.config import TrainConfig, load_config
from slipway.core.errors import SlipwayError, TrainingError
from slipway.training import distributed

HERE = Path(__file__).resolve().parent
EPOCHS = 4
INTERRUPT_AFTER = 2
SEED = 0
EPOCH_SEED = 100_003  # training.train reseeds every epoch with seed * 100_003 + epoch
# Float tolerances for runs that are equal in exact arithmetic (mlp, 1 vs 2 processes, resumed or not).
# Measured on 2 CPU cores after EPOCHS epochs: weights differ by at most 9e-7, per-epoch losses by 9e-8
# (relative). Dropping the per-rank loss weighting (a real bug that only changes the last, uneven batch)
# moves the weights of the resumed runs below by 2e-3 to 2e-2 and their losses by 2e-3 to 5e-3. The
# tolerances sit ~100x above the noise and 17x (weights) and 160x (losses) below that bug.
WEIGHT_ATOL = 1e-4
LOSS_RTOL = 1e-5
# Test errors of the 2-process teacher after EPOCHS epochs, measured: 3, 1, 1, 3, 3, 4 of 360 (seeds 0-5,
# 2 processes) and 3, 5, 3, 2, 2, 3 (1 process), 33 of 4320 in all (0.76%); the machine of issue 17 saw 8.
TEACHER_ERROR_RATE = 0.03  # ~4x the pooled rate and above every run seen: a conservative per-sample rate


class SimulatedInterruption(SlipwayError):
    """Raised on every rank at the same batch, so no rank waits for a peer in a collective."""


def _interrupt_at_epoch(model: torch.nn.Module, epoch: int) -> None:
    def hook(module: torch.nn.Module, _inputs: Any) -> None:
        if module.training and torch.initial_seed() - SEED * EPOCH_SEED >= epoch:
            raise SimulatedInterruption(f"simulated interruption before epoch {epoch + 1}")

    model.register_forward_pre_hook(hook)


def _rank_spread(model: torch.nn.Module) -> float:
    """Largest difference between this job's ranks in any weight or buffer (0.0 in a world of one)."""
    if distributed.current("cpu").world_size == 1:
        return 0.0
    mine = torch.cat([t.detach().double().flatten() for t in model.state_dict().values()])
    rank0 = mine.clone()
    torch.distributed.broadcast(rank0, src=0)
    spread = (mine - rank0).abs().max().reshape(1)
    torch.distributed.all_reduce(spread, op=torch.distributed.ReduceOp.MAX)
    return float(spread.item())


def ddp_fit(
    checkpoint_dir: str, architecture: str, interrupt_after: int | None = None, device: str = "cpu"
) -> dict[str, Any]:
    """Train a zoo model on the quickstart digits for EPOCHS (every rank runs this); what the tests check."""
    from slipway.core import data as data_lib
    from slipway.core.models import build_model
    from slipway.training.loop import accuracy, train

    overrides = [f"train.epochs={EPOCHS}", f"train.device={device}", f"teacher.architecture={architecture}"]
    cfg = load_config("quickstart", overrides)
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
        "rank_spread": _rank_spread(model),
        "test_errors": round((1 - accuracy(model, splits.x_test, splits.y_test)) * len(splits.y_test)),
        "test_samples": len(splits.y_test),
        "last_batch": len(splits.y_train) % cfg.train.batch_size,
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
        return ddp_fit(str(checkpoint_dir), "mlp", interrupt_after)
    finally:
        torch.set_num_threads(threads)


def ddp_fits(runs: list[dict[str, Any]], device: str = "cpu") -> list[dict[str, Any]]:
    """Several `ddp_fit` runs in one torchrun session: each launch costs ~6 s of process start-up."""
    return [ddp_fit(device=device, **run) for run in runs]


def _run(
    checkpoint_dir: Path, architecture: str = "mlp", interrupt_after: int | None = None
) -> dict[str, Any]:
    return {
        "checkpoint_dir": str(checkpoint_dir),
        "architecture": architecture,
        "interrupt_after": interrupt_after,
    }


def _launch(*runs: dict[str, Any]) -> list[dict[str, Any]]:
    return distributed.launch(
        f"{__name__.rpartition('.')[2]}:ddp_fits",
        {"runs": list(runs), "device": "cpu"},
        2,
        threads_per_process=1,
        timeout_s=600,
    )


def _assert_same_training(run_dir: Path, reference_dir: Path) -> None:
    """Same last-epoch weights and per-epoch losses as the reference run, up to float summation order.

    Last-epoch weights, not the best-val ones: which epoch is "best" hangs on discrete val accuracies that a
    sample on a decision boundary can flip. Val accuracy is left out for the same reason.
    """
    run = torch.load(run_dir / "last.pt", weights_only=True)
    reference = torch.load(reference_dir / "last.pt", weights_only=True)
    assert run["epoch"] == reference["epoch"] == EPOCHS
    torch.testing.assert_close(run["model"], reference["model"], rtol=0, atol=WEIGHT_ATOL)
    for key in ("loss", "val_loss", "lr"):
        got = [h[key] for h in run["history"]]
        want = [h[key] for h in reference["history"]]
        assert got == pytest.approx(want, rel=LOSS_RTOL), (key, got, want)


@pytest.mark.stochastic
def test_two_processes_match_one_and_resume_across_world_sizes(tmp_path: Path, worker_path: None) -> None:
    """mlp runs interrupted on 2 processes and resumed on 1, and vice versa, train exactly like 1 process;
    the BatchNorm teacher on 2 processes keeps its ranks identical and learns.

    mlp: deterministic up to float order (WEIGHT_ATOL, LOSS_RTOL); epochs 1-2 of one resumed run and 3-4 of
    the other run on 2 processes, so every epoch of the 2-process loop is compared with the 1-process loop.
    Teacher: identical ranks is exact; the accuracy bound fails a correct run with probability < 1e-4:
    errors ~ Binomial(360, TEACHER_ERROR_RATE), cut at the Chernoff bound of `chance.max_errors` (27 errors;
    P(X >= 28) <= 5e-5, exactly 6e-6).
    """
    one = _in_process(tmp_path / "one")
    assert one["world_size"] == 1 and one["resumed_from_epoch"] is None and one["epochs_run"] == EPOCHS
    # 1 and 2 processes take the same batches only if 2 processes skip no short last batch (min 2 per rank).
    assert one["last_batch"] == 0 or one["last_batch"] >= 4, one

    # 2 processes, interrupted after INTERRUPT_AFTER epochs: the message of rank 0's SlipwayError comes back.
    with pytest.raises(TrainingError, match="simulated interruption before epoch 3"):
        _launch(_run(tmp_path / "two-then-one", interrupt_after=INTERRUPT_AFTER))
    checkpoint = torch.load(tmp_path / "two-then-one" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == INTERRUPT_AFTER and checkpoint["world_size"] == 2
    assert not any(k.startswith("module.") for k in checkpoint["model"]), (
        "checkpoint must hold the bare model"
    )
    two_then_one = _in_process(tmp_path / "two-then-one")

    # 1 process interrupted, 2 processes finish the run; the teacher shares that torchrun session.
    with pytest.raises(SimulatedInterruption):
        _in_process(tmp_path / "one-then-two", INTERRUPT_AFTER)
    one_then_two, teacher = _launch(
        _run(tmp_path / "one-then-two"), _run(tmp_path / "teacher", "teacher_cnn")
    )

    assert two_then_one["world_size"] == 1 and one_then_two["world_size"] == 2
    for resumed, run_dir in ((two_then_one, "two-then-one"), (one_then_two, "one-then-two")):
        assert resumed["resumed_from_epoch"] == INTERRUPT_AFTER and resumed["epochs_run"] == EPOCHS
        _assert_same_training(tmp_path / run_dir, tmp_path / "one")

    assert teacher["world_size"] == 2 and teacher["resumed_from_epoch"] is None
    assert teacher["epochs_run"] == EPOCHS
    assert teacher["rank_spread"] == one_then_two["rank_spread"] == 0.0, "ranks must hold identical state"
    allowed = max_errors(teacher["test_samples"], TEACHER_ERROR_RATE)
    assert teacher["test_errors"] <= allowed, (teacher, allowed)


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
    """`train.workers=2` in the pipeline step: real DDP, rank 0 writes the model."""
    from slipway import steps
    from slipway.core import data as data_lib
    from slipway.core.models import load_model

    cfg = fast_config.model_copy(deep=True)
    cfg.train.workers = 2
    dataset = tmp_path / "dataset.npz"
    data_lib.save_splits(data_lib.load_dataset(cfg.data, cfg.seed), dataset)
    result = steps.train_teacher(cfg, dataset, tmp_path / "teacher.pt")
    model, _ = load_model(tmp_path / "teacher.pt")
    assert result.epochs_run == cfg.train.epochs and result.best_val_accuracy > 0.5
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.stochastic  # wall-clock: a 3 s timeout, a 60 s bound (30 s of it the kill's grace)
def test_a_hung_launch_times_out_and_kills_its_workers(tmp_path: Path, worker_path: None) -> None:
    """A worker that never returns: the launcher kills the whole torchrun session at the timeout."""
    started = time.monotonic()
    with pytest.raises(TrainingError, match="timed out after 3"):
        distributed.launch(f"{__name__.rpartition('.')[2]}:sleep_forever", {}, 1, timeout_s=3)
    assert time.monotonic() - started < 60


def sleep_forever() -> None:
    time.sleep(3600)

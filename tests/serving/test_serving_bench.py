"""The serving bench's champion phase (issue #16 part 3) at a tiny scale, and its plot (issue #15 item 17).

The champion is a model with a known answer (the class is where the image's one bright pixel sits), registered
in a real MLflow SQLite store with its Triton repository and promoted to `champion`, next to a dataset artifact
laid out as kfp.local writes it. The bench runs as a subprocess: it downloads the repository (digest checked),
serves it with `slipway serve`, and sends the test images over HTTP and gRPC; the accuracy it reports can only
come from the served answers, because a fixed share of the images is built to be answered wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from benchmarks.serving import plot
from benchmarks.serving_champion import WARMUP_REQUESTS, BenchError, load_champion, search_max_rate
from slipway import registry
from slipway.compression.onnx_export import INPUT_NAME, OUTPUT_NAME, describe_onnx
from slipway.core.artifacts import write_metadata
from slipway.core.config import RegistryConfig, TritonConfig
from slipway.core.data import DatasetSplits, save_splits
from slipway.core.errors import RegistryError
from slipway.core.summary import RegistrySummary, RunSummary
from slipway.serving.triton_repository import write_model

ROOT = Path(__file__).resolve().parents[2]
MODEL = "known-answer"
IMAGES, WRONG_FROM = 40, 30  # images 30..39 have their bright pixel one class off: 75% are answered right


def first_ten_onnx(path: Path) -> Path:
    """logits = the first ten pixels of the 1x8x8 image (batch axis dynamic), with Slipway's metadata sidecar."""
    starts = helper.make_tensor("starts", TensorProto.INT64, [1], [0])
    ends = helper.make_tensor("ends", TensorProto.INT64, [1], [10])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", [INPUT_NAME], ["flat"], axis=1),
            helper.make_node("Slice", ["flat", "starts", "ends", "axes"], [OUTPUT_NAME]),
        ],
        "first_ten",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 10])],
        [starts, ends, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    write_metadata(path, describe_onnx(path))
    return path


def known_splits() -> DatasetSplits:
    y = np.arange(IMAGES, dtype=np.int64) % 10
    bright = np.where(np.arange(IMAGES) < WRONG_FROM, y, (y + 1) % 10)
    x = np.zeros((IMAGES, 64), dtype=np.float32)
    x[np.arange(IMAGES), bright] = 1.0
    x = x.reshape(IMAGES, 1, 8, 8)
    return DatasetSplits("known", x, y, x, y, x, y)


@pytest.fixture(scope="module")
def champion_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetSplits]:
    """A run folder as `slipway run quickstart` leaves it: summary.json, the MLflow store with a champion whose
    Triton repository is logged with its digest, and pipeline/<run>/prepare-data/dataset."""
    tmp_path = tmp_path_factory.mktemp("bench")
    run_dir = tmp_path / "run"
    splits = known_splits()
    dataset = run_dir / "pipeline" / "slipway-quickstart-test" / "prepare-data" / "dataset"
    dataset.parent.mkdir(parents=True)
    save_splits(splits, dataset)
    onnx_file = first_ten_onnx(tmp_path / "model.onnx")
    uri, artifacts = registry.local_store(run_dir)
    cfg = RegistryConfig(tracking_uri=uri, model_name=MODEL)
    run_id = registry.start_run(cfg, "test-run", artifacts, {})
    tags = {"slipway.dataset_fingerprint": splits.fingerprint, "slipway.accuracy": "0.750000"}
    version = registry.register_onnx(cfg, run_id, onnx_file, tags, splits.x_test[:2]).version
    repo = tmp_path / "repo"
    write_model(
        repo,
        MODEL,
        onnx_file,
        TritonConfig(max_batch_size=8, preferred_batch_sizes=[4, 8]),
        version=int(version),
    )
    registry.log_model_repository(cfg, version, repo)
    registry.promote(cfg, version)
    summary = RunSummary(
        status="succeeded",
        pipeline="quickstart",
        duration_s=0.0,
        run_key="test-run",
        registry=RegistrySummary(tracking_uri=uri, model_name=MODEL, version=version, aliases=["champion"]),
    )
    (run_dir / "summary.json").write_text(summary.model_dump_json())
    return run_dir, splits


def test_champion_phase_reports_the_accuracy_of_the_served_answers(
    champion_run: tuple[Path, DatasetSplits], tmp_path: Path
) -> None:
    run_dir, splits = champion_run
    out = tmp_path / "docs"
    rate, seconds = 50, 2
    argv = [sys.executable, "-m", "benchmarks.serving", "--output", str(out), "--only", "champion"]
    argv += ["--run-dir", str(run_dir), "--reuse-run", "--rate", str(rate), "--duration", str(seconds)]
    argv += ["--repeats", "1", "--search-low", "40", "--search-high", "40", "--search-seconds", "1"]
    env = {**os.environ, "SLIPWAY_LOG_LEVEL": "WARNING"}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]

    result = json.loads((out / "benchmarks" / "serving.json").read_text())["champion_at_rate"]
    model = result["model"]
    assert (model["name"], model["version"], model["digest_checked"]) == (MODEL, "1", True)
    assert model["dataset_fingerprint"] == splits.fingerprint and model["test_images"] == IMAGES
    sent = rate * seconds
    right = sum(k % IMAGES < WRONG_FROM for k in range(sent))  # request k carries test image k mod 40
    for protocol, ok in (("http", "200"), ("grpc", "OK")):
        run = result["at_rate"][protocol]["runs"][0]
        assert run["statuses"] == {ok: sent} and run["errors"] == 0, run
        assert (run["answered"], run["correct"]) == (sent, right)
        assert result["at_rate"][protocol]["accuracy"] == pytest.approx(right / sent)
        assert 0 < run["p50_ms"] <= run["p99_ms"] < 1000
        assert run["sent_per_s"] == pytest.approx(rate, rel=0.1) and run["valid"]
        assert 0 < run["client_cpu_share"] < 2 and 0 < run["server_cpu_share"] < 4  # both processes measured
        search = result["max_rate"][protocol]
        assert [s["offered_per_s"] for s in search["steps"]] == [40.0]
        assert search["max_rate_per_s"] == 40.0 and search["capped_at_high"]
    assert not result["targets_held"]  # 80% accuracy misses the 95% target, and the bench says so
    # The server's own statistics saw every request: warm-ups, the run at the rate and the one search step.
    inferred = sum(int(size) * count for size, count in result["server_batch_sizes"].items())
    assert inferred == 2 * (WARMUP_REQUESTS + sent + WARMUP_REQUESTS + 40)

    section = (out / "benchmarks.md").read_text()
    assert "<!-- serving-champion:start -->" in section and "| HTTP | " in section
    assert (out / "benchmarks" / "serving.png").read_bytes().startswith(b"\x89PNG")


def test_the_champion_must_come_with_its_own_data_and_an_intact_repository(
    champion_run: tuple[Path, DatasetSplits], tmp_path: Path
) -> None:
    run_dir, _ = champion_run
    elsewhere = tmp_path / "elsewhere"  # the same registry, but no dataset artifact of the champion's
    elsewhere.mkdir()
    (elsewhere / "summary.json").write_text((run_dir / "summary.json").read_text())
    with pytest.raises(BenchError, match=r"none of the 0 dataset artifacts .* has the champion's dataset"):
        load_champion(elsewhere / "summary.json", tmp_path / "a")

    stored = next((run_dir / "mlartifacts").rglob("triton_model_repository/*/config.pbtxt"))
    original = stored.read_text()
    stored.write_text(original + "\n# changed after registration\n")
    try:
        with pytest.raises(
            RegistryError, match=r"downloaded model repository has digest .* deleted and refused"
        ):
            load_champion(run_dir / "summary.json", tmp_path / "b")
    finally:
        stored.write_text(original)
    assert load_champion(run_dir / "summary.json", tmp_path / "c").version == "1"


def test_rate_search_doubles_then_bisects_to_the_highest_rate_meeting_p99() -> None:
    def load(rate: float) -> dict[str, Any]:  # a server that keeps p99 under 100 ms up to 1,700 req/s
        p99 = 5.0 if rate <= 1700 else 400.0
        return {
            "offered_per_s": rate,
            "p99_ms": p99,
            "errors": 0,
            "statuses": {"200": 1},
            "valid": True,
            "sent_per_s": rate,
            "answered_per_s": rate * (1.0 if rate <= 1700 else 0.6),
            "seconds": 1,
        }

    found = search_max_rate(load, 500, 4000, bisections=3)
    assert [s["offered_per_s"] for s in found["steps"]] == [500, 1000, 2000, 1500, 1750, 1620]
    assert (found["max_rate_per_s"], found["first_miss_per_s"]) == (1620, 1750)
    assert "p99 400.0 ms >= 100" in found["limited_by"][0]
    capped = search_max_rate(load, 200, 800, bisections=2)
    assert capped["max_rate_per_s"] == 800 and capped["capped_at_high"]

    def generator_bound(rate: float) -> dict[str, Any]:  # the generator never keeps up
        return {**load(rate), "valid": False, "sent_per_s": 1.0}

    assert search_max_rate(generator_bound, 500, 4000, 2)["max_rate_per_s"] is None


def test_plot_writes_throughput_and_p99_against_concurrency_from_a_small_json(tmp_path: Path) -> None:
    def level(req_per_s: float, p99: float) -> dict[str, float]:
        return {"req_per_s": req_per_s, "p50_ms": p99 / 2, "p99_ms": p99}

    report = {
        "machine": {"cores": 2},
        "dynamic_batching": {
            "model": "cnn32 (3x32x32 CNN), single-image HTTP binary requests, closed loop",
            "max_queue_delay_ms": 2.0,
            "concurrency": {
                str(c): {"batching": level(100.0 * c, 4.0 * c), "no_batching": level(90.0 * c, 6.0 * c)}
                for c in (1, 4, 16)
            },
        },
    }
    path = plot(report, tmp_path / "serving.png")
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(path).shape
    assert width > 2 * height  # two panels side by side
    with pytest.raises(Exception, match="nothing to plot"):
        plot({"machine": {}}, tmp_path / "none.png")

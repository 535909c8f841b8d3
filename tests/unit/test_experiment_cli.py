"""`slipway experiment` as a user meets it, in subprocesses: the cluster dry run prints objects kubectl can take,
bad options name the option, and an unreachable server is a one-line error with its exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SLIPWAY = Path(sys.executable).with_name("slipway")


def slipway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SLIPWAY), "experiment", *args], capture_output=True, text=True, timeout=120, check=False
    )


CLUSTER = ("my-model", "--a", "1", "--b", "2", "--name", "ab1", "-n", "ml", "--storage-uri", "s3://models/b")


def test_cluster_dry_run_prints_the_objects_as_yaml_documents_and_a_json_list() -> None:
    done = slipway("start", *CLUSTER, "--split", "0.2", "--dry-run")
    assert done.returncode == 0, done.stderr
    challenger, graph = yaml.safe_load_all(done.stdout)
    assert (challenger["kind"], challenger["metadata"]["name"]) == ("InferenceService", "ab1-b")
    assert challenger["spec"]["predictor"]["model"]["storageUri"] == "s3://models/b"
    assert (graph["kind"], graph["metadata"]["name"], graph["metadata"]["namespace"]) == (
        "InferenceGraph",
        "ab1",
        "ml",
    )
    steps = graph["spec"]["nodes"]["root"]["steps"]
    assert [(s["name"], s["weight"]) for s in steps] == [("a", 80), ("b", 20)]
    assert steps[1]["serviceUrl"] == "http://ab1-b.ml.svc.cluster.local/v2/models/my-model/infer"
    as_json = json.loads(slipway("start", *CLUSTER, "--dry-run", "-o", "json").stdout)
    assert as_json["kind"] == "List" and [o["kind"] for o in as_json["items"]] == [
        "InferenceService",
        "InferenceGraph",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--split", "1.5"), "options.b_share: Input should be less than 1"),
        (("--b", "1"), "options.b: must differ from a"),
        (("--name", "Not_A_Label"), "options.name: String should match pattern"),
        (("--max-duration", "soon"), "'soon' is not a duration"),
        (("--mde", "0"), "options.mde: Input should be greater than 0"),
    ],
)
def test_a_bad_option_is_one_line_naming_it_with_exit_2(args: tuple[str, ...], message: str) -> None:
    done = slipway("start", "my-model", "--a", "1", "--b", "2", "--name", "ab1", *args)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_versions_need_a_registry_or_flags() -> None:
    done = slipway("start", "my-model")
    assert done.returncode == 2 and "--a: give a version, or --tracking-uri" in done.stderr, done.stderr


def test_stop_needs_one_of_keep_and_promote_winner() -> None:
    neither, both = (
        slipway("stop", "my-model"),
        slipway("stop", "my-model", "--keep", "a", "--promote-winner"),
    )
    assert neither.returncode == both.returncode == 2
    assert "give --keep a|b, or --promote-winner" in neither.stderr
    assert "--keep and --promote-winner: give one" in both.stderr


def test_an_unreachable_server_is_a_clear_error() -> None:
    done = slipway("status", "my-model", "--url", "http://127.0.0.1:9")
    assert done.returncode == 1 and "127.0.0.1:9" in done.stderr and "Traceback" not in done.stderr, (
        done.stderr
    )


def test_cluster_status_needs_the_experiment_name() -> None:
    done = slipway("status", "my-model", "-n", "ml")
    assert done.returncode == 2 and "--name: with -n/--namespace" in done.stderr, done.stderr

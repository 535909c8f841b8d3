"""Journey e: the drift loop on loopback, every hop real.

The README project is trained and packaged (`slipway run quickstart`), served by `slipway serve` in Triton's
explicit model-control mode with its payload logger pointed at `slipway monitor serve`. Clients send traffic
over HTTP (binary and JSON tensors) and gRPC with tritonclient, and labels as feedback. `slipway run drift`
checks a window from the same distribution (no alarm), then a shifted one (alarm): the retrain step runs the
compiled training pipeline with kfp.local on the training data plus the labelled window, the new version is
gated against the champion, registered, and loaded by the running server while a client keeps sending.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import SLIPWAY, steps_by_name, user_env

from benchmarks.loop import QUICK, WINDOW, LoopRun, make_project, run_loop
from slipway.serving.client import SMOKE_ID_PREFIX

MODEL = "my-model"


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> LoopRun:
    """The loop driven as a user would (benchmarks/loop.py, which `make bench` also times); the README project,
    with the student's full distillation (it needs it to pass the gate) and short timing loops."""
    return run_loop(make_project(tmp_path_factory.mktemp("loop")), SLIPWAY, user_env(), QUICK)


def test_alarm_only_on_the_shifted_window(loop) -> None:
    null, shift = steps_by_name(loop.null), steps_by_name(loop.shift)
    assert null["detect-drift"]["outputs"]["Output"] is False
    assert null["retrain"]["status"] == "skipped"
    assert shift["detect-drift"]["outputs"]["Output"] is True
    assert shift["retrain"]["status"] == "succeeded"


def test_retrain_used_the_labelled_window_and_the_new_version_passed_the_gate(loop) -> None:
    outcome = steps_by_name(loop.shift)["retrain"]["outputs"]["outcome"]
    assert outcome["status"] == "succeeded" and outcome["version"] == "2", outcome
    assert outcome["labelled_rows"] == WINDOW
    assert outcome["train_rows_added"] + outcome["recent_rows"] == WINDOW
    retrained = json.loads(Path(outcome["summary"]).read_text())
    assert retrained["gate"]["passed"] is True
    # Gated against v1 re-run on both splits; v1 is much worse on the recent (shifted) rows.
    reasons = " | ".join(retrained["gate"]["reasons"])
    assert "ok   test split" in reasons and "ok   recent split" in reasons and "champion v1" in reasons, (
        reasons
    )


def test_the_new_version_is_at_least_as_accurate_on_the_shifted_data(loop) -> None:
    eval_old, eval_new, y_eval, versions = loop.eval
    assert set(versions) == {"2"}
    old, new = (eval_old == y_eval).mean(), (eval_new == y_eval).mean()
    assert new >= old, (old, new)
    window_preds, y_new, window_versions = loop.window
    assert set(window_versions) == {"1"} and (window_preds == y_new).mean() < 0.9  # the shift hurt v1


def test_the_server_swapped_versions_without_a_failed_request(loop) -> None:
    live = loop.live
    assert live.failures == []
    assert loop.metadata["versions"] == ["2"]
    assert live.versions[0] == "1" and live.versions[-1] == "2", Counter(live.versions)
    first_new = live.versions.index("2")
    assert set(live.versions[first_new:]) == {"2"}  # once swapped, never back


def test_every_request_was_captured_once_with_its_model_version(loop) -> None:
    events = loop.events
    per_kind = Counter((e["id"], e["kind"]) for e in events)
    assert all(count == 1 for count in per_kind.values()), [k for k, c in per_kind.items() if c > 1][:5]
    requests = {e["id"] for e in events if e["kind"] == "request"}
    smoke = {i for i in requests if i.startswith(SMOKE_ID_PREFIX)}  # the deploy step's check of version 2
    assert requests - smoke == set(loop.sent_ids) and len(smoke) == 1
    versions = {e["id"]: e["model_version"] for e in events if e["kind"] == "request"}
    live = loop.live
    assert [versions[i] for i in live.ids] == live.versions
    assert {e["model_name"] for e in events if e["kind"] != "feedback"} == {MODEL}

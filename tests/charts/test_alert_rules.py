"""The chart's alert rules, evaluated by Prometheus's own `promtool` against synthetic series.

The PrometheusRule is rendered with the real helm, its `spec.groups` written as a plain rules file, and
`alert_rules_test.yaml` (promtool unit tests: one case where each alert fires, with its labels and annotations,
and one where it stays silent) run with `promtool test rules`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import NAMESPACE, RELEASE, helm_template_text, load_documents, one_object, run_tool

PROMTOOL_TESTS = Path(__file__).with_name("alert_rules_test.yaml")
RULES_FILE = "slipway-rules.yaml"  # the name alert_rules_test.yaml's rule_files expects beside it


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool not found: the alert rules are not evaluated; install it with `apt-get install prometheus` "
            "or `make tools` (puts promtool into .tools/bin)"
        )
    return path


def rendered_rule() -> dict[str, Any]:
    """The PrometheusRule of the default values, as `helm template` renders it for RELEASE in NAMESPACE."""
    return one_object(load_documents(helm_template_text(None, ())), "PrometheusRule")


def alert_names(rule: dict[str, Any]) -> set[str]:
    return {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r}


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A folder with the rendered rules file and the promtool unit tests that read it."""
    groups = rendered_rule()["spec"]["groups"]
    (tmp_path / RULES_FILE).write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(PROMTOOL_TESTS, tmp_path / PROMTOOL_TESTS.name)
    return tmp_path


def test_promtool_tests_are_for_this_render() -> None:
    text = PROMTOOL_TESTS.read_text()
    assert f'namespace="{NAMESPACE}"' in text and f'service="{RELEASE}-monitor"' in text


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]:
        for check in test["alert_rule_test"]:
            cases.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    alerts = alert_names(rendered_rule())
    assert alerts == set(cases), f"alerts without promtool cases: {alerts - set(cases)}"
    assert all(outcomes == {True, False} for outcomes in cases.values()), cases


def test_rules_pass_promtool_check(rules_dir: Path) -> None:
    result = run_tool([promtool(), "check", "rules", str(rules_dir / RULES_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_and_stay_silent_on_synthetic_series(rules_dir: Path) -> None:
    result = run_tool([promtool(), "test", "rules", str(rules_dir / PROMTOOL_TESTS.name)])
    assert result.returncode == 0, result.stdout + result.stderr


# ---- The Grafana dashboard's queries, evaluated by promtool on Triton's series during a canary ----
REVISIONS = {"stable": "demo-predictor-00001", "canary": "demo-predictor-00002"}
GPU = {"pod": "demo-predictor-00001-deployment-7f9c", "gpu_uuid": "GPU-0"}


def dashboard_targets() -> dict[tuple[str, str], str]:
    """(panel title, refId) -> PromQL of the rendered dashboard (default values: release demo in models)."""
    config_map = one_object(load_documents(helm_template_text(None, ())), "ConfigMap", f"{RELEASE}-dashboard")
    (text,) = config_map["data"].values()
    panels = [p for p in json.loads(text)["panels"] if p["type"] != "row"]
    return {(p["title"], t["refId"]): t["expr"] for p in panels for t in p["targets"]}


def _series(name: str, revision: str, values: str, **labels: str) -> dict[str, str]:
    base = {
        "namespace": NAMESPACE,
        "inferenceservice": RELEASE,
        "revision": revision,
        "pod": f"{revision}-pod",
    }
    base |= {"model": "model", "version": "1"} | labels
    return {"series": name + "{" + ", ".join(f'{k}="{v}"' for k, v in base.items()) + "}", "values": values}


def canary_series() -> list[dict[str, str]]:
    """Stable: 3 requests/s of 8 rows, batched 16 rows per execution, none failing. Canary: 1 request/s of 1 row,
    a quarter failing, unbatched. Per request both spend 4 ms queued and 1 / 8 / 0.5 ms in compute input / infer /
    output; their mean latencies are 16 and 32 ms. Counters grow per minute (rate over 5m = per-minute / 60)."""
    stable, canary = REVISIONS["stable"], REVISIONS["canary"]
    per_minute = {  # name: (stable per minute, canary per minute)
        "nv_inference_request_success": (180, 45),
        "nv_inference_count": (1440, 45),
        "nv_inference_exec_count": (90, 45),
        "nv_inference_request_duration_us": (180 * 16000, 45 * 32000),
        "nv_inference_queue_duration_us": (180 * 4000, 45 * 4000),
        "nv_inference_compute_input_duration_us": (180 * 1000, 45 * 1000),
        "nv_inference_compute_infer_duration_us": (180 * 8000, 45 * 8000),
        "nv_inference_compute_output_duration_us": (180 * 500, 45 * 500),
    }
    series = [
        _series(name, revision, f"0+{step}x20")
        for name, steps in per_minute.items()
        for revision, step in zip((stable, canary), steps, strict=True)
    ]
    series += [
        _series("nv_inference_request_failure", stable, "0x20", reason="BACKEND"),
        _series("nv_inference_request_failure", canary, "0+15x20", reason="BACKEND"),
        _series("nv_inference_pending_request_count", stable, "3x20"),
        _series("nv_inference_pending_request_count", canary, "0x20"),
        _series("nv_inference_request_summary_us", stable, "40000x20", quantile="0.99"),
        _series("nv_inference_request_summary_us", canary, "96000x20", quantile="0.99"),
        _series("nv_inference_request_summary_us", stable, "8000x20", quantile="0.5"),
        _series("nv_inference_request_summary_us", canary, "16000x20", quantile="0.5"),
        # Another InferenceService in the namespace: none of the panels may count it.
        _series("nv_inference_request_success", stable, "0+6000x20", inferenceservice="other"),
        _series("nv_inference_pending_request_count", stable, "50x20", inferenceservice="other"),
        {
            "series": f'slipway_drift_share_of_drifted_columns{{namespace="{NAMESPACE}", service="{RELEASE}-monitor"}}',
            "values": "0.25x20",
        },
        {"series": f'up{{namespace="{NAMESPACE}", service="{RELEASE}-monitor"}}', "values": "1x20"},
    ]
    gpu = {"namespace": NAMESPACE, "inferenceservice": RELEASE, "revision": stable} | GPU
    for name, value in (
        ("nv_gpu_utilization", "0.75x20"),
        ("nv_gpu_memory_used_bytes", "6000000000x20"),
        ("nv_gpu_memory_total_bytes", "8000000000x20"),
    ):
        series.append(
            {"series": name + "{" + ", ".join(f'{k}="{v}"' for k, v in gpu.items()) + "}", "values": value}
        )
    return series


def by_revision(stable: float, canary: float) -> list[dict[str, Any]]:
    return [
        {"labels": f'{{revision="{REVISIONS["stable"]}"}}', "value": stable},
        {"labels": f'{{revision="{REVISIONS["canary"]}"}}', "value": canary},
    ]


def one(value: float, labels: str = "{}") -> list[dict[str, Any]]:
    return [{"labels": labels, "value": value}]


GPU_LABELS = f'{{gpu_uuid="{GPU["gpu_uuid"]}", pod="{GPU["pod"]}"}}'
# What each dashboard query answers at minute 10 of canary_series().
EXPECTED: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("Requests/s by revision", "A"): by_revision(3, 1),
    ("Traffic share by revision", "A"): by_revision(0.75, 0.25),
    ("Failed requests by revision", "A"): by_revision(0, 0.25),
    ("p99 latency by revision", "A"): by_revision(40, 96),
    ("Mean latency by revision", "A"): by_revision(16, 32),
    ("Request latency (Triton, p50/p99)", "A"): one(16),
    ("Request latency (Triton, p50/p99)", "B"): one(96),
    ("Throughput", "A"): one(24.75),
    ("Throughput", "B"): one(3.75),
    ("Throughput", "C"): one(0.25),
    ("Queue and compute time per request", "A"): one(4),
    ("Queue and compute time per request", "B"): one(1),
    ("Queue and compute time per request", "C"): one(8),
    ("Queue and compute time per request", "D"): one(0.5),
    ("Pending requests by revision", "A"): by_revision(3, 0),
    ("Batch size by revision", "A"): by_revision(16, 1),
    ("GPU utilisation", "A"): one(0.75, GPU_LABELS),
    ("GPU utilisation", "B"): one(0.75, GPU_LABELS),
    ("Drift: share of drifted columns", "A"): one(0.25),
    ("Drift monitor up", "A"): one(1),
}
# Not checked on series: the overall mean (panel 1, C: the per-revision mean is), and the constant reference line.
UNCHECKED = {("Request latency (Triton, p50/p99)", "C"), ("Drift: share of drifted columns", "B")}


def test_every_dashboard_query_is_checked() -> None:
    assert set(dashboard_targets()) == set(EXPECTED) | UNCHECKED


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr}
        for i, expr in enumerate(dashboard_targets().values())
    ]
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    result = run_tool([promtool(), "check", "rules", str(tmp_path / "dashboard.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_shows_canary_vs_stable_queue_batch_and_gpu(tmp_path: Path) -> None:
    """promtool evaluates each panel's query on Triton's series of a canary: the numbers a person reads."""
    targets = dashboard_targets()
    (tmp_path / "empty-rules.yaml").write_text("groups: []\n")
    tests = {
        "rule_files": ["empty-rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "dashboard during a canary",
                "interval": "1m",
                "input_series": canary_series(),
                "promql_expr_test": [
                    {"expr": targets[key], "eval_time": "10m", "exp_samples": samples}
                    for key, samples in EXPECTED.items()
                ],
            }
        ],
    }
    (tmp_path / "dashboard_test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = run_tool([promtool(), "test", "rules", str(tmp_path / "dashboard_test.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr

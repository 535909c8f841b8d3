"""The chart's alert rules, evaluated by Prometheus's own `promtool` against synthetic series.

The PrometheusRule is rendered with the real helm, its `spec.groups` written as a plain rules file, and
`alert_rules_test.yaml` (promtool unit tests: one case where each alert fires, with its labels and annotations,
and one where it stays silent) run with `promtool test rules`."""

from __future__ import annotations

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

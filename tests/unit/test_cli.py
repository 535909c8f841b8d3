"""The CLI's own verbs: listing, config errors as messages with exit codes, compile."""

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from slipway.cli.main import main


def test_pipelines_lists_quickstart() -> None:
    result = CliRunner().invoke(main, ["pipelines"])
    assert result.exit_code == 0 and "quickstart" in result.output


def test_config_error_is_a_message_not_a_traceback() -> None:
    result = CliRunner().invoke(main, ["config", "show", "--set", "train.epochz=1"])
    assert result.exit_code == 2
    assert "train.epochz: unknown key" in result.output
    assert "Traceback" not in result.output


def test_unknown_pipeline_is_explained() -> None:
    result = CliRunner().invoke(main, ["run", "nope"])
    assert result.exit_code == 2 and "unknown pipeline 'nope'" in result.output


def test_config_show_applies_overrides() -> None:
    result = CliRunner().invoke(main, ["config", "show", "--set", "train.epochs=4"])
    assert result.exit_code == 0
    assert yaml.safe_load(result.output)["train"]["epochs"] == 4


def test_compile_embeds_the_resolved_config(tmp_path: Path) -> None:
    out = tmp_path / "q.yaml"
    result = CliRunner().invoke(main, ["compile", "quickstart", "-o", str(out), "--set", "seed=7"])
    assert result.exit_code == 0, result.output
    spec = next(yaml.safe_load_all(out.read_text()))
    default = spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert default["seed"] == 7 and default["name"] == "quickstart"


@pytest.mark.parametrize(
    ("gate_passed", "failed", "gated", "status"),
    [
        (True, False, True, "succeeded"),
        (False, False, True, "rejected"),
        (None, False, True, "failed"),  # a gated pipeline that never reached its gate
        (None, False, False, "succeeded"),  # the drift pipeline has no gate
        (None, True, False, "failed"),
        (True, True, True, "failed"),
    ],
)
def test_run_status(gate_passed: bool | None, failed: bool, gated: bool, status: str) -> None:
    from slipway.core.summary import status_of

    assert status_of(gate_passed, failed, gated) == status

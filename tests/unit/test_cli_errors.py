"""One error style for every command, checked the way a user meets it: `slipway` processes, their stderr and
their exit codes (`error: ...`, no traceback unless --debug, the codes of README's "Exit codes" table)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from slipway.cli.errors import ExitCode
from slipway.cli.main import LAZY_COMMANDS, main
from slipway.cli.options import format_duration, parse_duration

ROOT = Path(__file__).resolve().parents[2]
SLIPWAY = Path(sys.executable).with_name("slipway")


def _slipway(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SLIPWAY_DEBUG"}
    return subprocess.run(
        [str(SLIPWAY), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The process printed exactly one line, `error: ...`, on stderr, nothing on stdout, and no traceback."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert done.stdout == ""
    return lines[0]


BROKEN_KUBECONFIGS = {
    "not YAML": ("apiVersion: v1\nclusters: [\n  - name: x\n", "is not valid YAML at line 3, column 3"),
    "a list": ("- just\n- a list\n", "is not a kubeconfig: expected a mapping"),
    "users not a list": ("apiVersion: v1\nusers: 12\n", "`users` must be a list of entries with a `name`"),
    "empty": ("", "is empty"),
    "unknown context": (
        "apiVersion: v1\nclusters: []\ncontexts: []\nusers: []\ncurrent-context: nope\n",
        "no usable Kubernetes credentials from kubeconfig",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_KUBECONFIGS))
def test_a_broken_kubeconfig_is_one_error_line(tmp_path: Path, case: str) -> None:
    text, expected = BROKEN_KUBECONFIGS[case]
    (tmp_path / "bad.yaml").write_text(text)
    done = _slipway("rollout", "status", "x", "-n", "y", "--kubeconfig", "bad.yaml", cwd=tmp_path)
    assert done.returncode == ExitCode.USAGE
    line = _one_error_line(done)
    assert "bad.yaml" in line and expected in line


def test_debug_shows_the_traceback_then_the_same_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BROKEN_KUBECONFIGS["not YAML"][0])
    old_spelling = ["--name", "x", "--namespace", "y", "--kubeconfig", "bad.yaml"]
    done = _slipway("--debug", "rollout", "status", *old_spelling, cwd=tmp_path)
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.startswith("Traceback (most recent call last):")
    assert "KubeconfigError" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("error: kubeconfig bad.yaml is not valid YAML")


def test_an_unknown_config_key_names_the_key_it_was_probably_meant_to_be() -> None:
    done = _slipway("config", "show", "--set", "train.epochz=3")
    assert done.returncode == ExitCode.USAGE
    assert _one_error_line(done) == (
        "error: invalid configuration: train.epochz: unknown key; did you mean `train.epochs`?"
    )


def test_config_problems_are_one_readable_line_each() -> None:
    done = _slipway("config", "show", "--set", "gate.min_accuracy=3", "--set", "trian.epochs=2")
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.splitlines() == [
        "error: invalid configuration (2 problems):",
        "  gate.min_accuracy: Input should be less than or equal to 1 (got 3)",
        "  trian: unknown key; did you mean `train`?",
    ]


def test_a_bad_option_value_names_the_option_without_pydantic_dumps() -> None:
    done = _slipway("deploy", "m", "-n", "ns", "--storage-uri", "s3://b/m", "--format", "onnx", "--cpu", "9x")
    assert done.returncode == ExitCode.USAGE
    line = _one_error_line(done)
    assert line.startswith("error: invalid option: --cpu: String should match pattern")
    assert line.endswith("(got '9x')")
    assert "pydantic" not in line and "type=" not in line


def test_usage_errors_keep_exit_2_in_the_same_style() -> None:
    for args, message in [
        (["rollout", "status", "-n", "ns"], "error: missing NAME (the InferenceService)"),
        (["rollout", "status", "a", "--name", "b", "-n", "ns"], "error: NAME 'a' and --name 'b' differ"),
        (["rollout", "status", "a", "-n", "ns", "--timeout", "5x"], "error: Invalid value for '--timeout'"),
        (["--no-such-flag"], "error: No such option '--no-such-flag'"),
    ]:
        done = _slipway(*args)
        assert done.returncode == ExitCode.USAGE, args
        assert "Usage: slipway" in done.stderr and message in done.stderr.splitlines()[-1], done.stderr
        assert "Traceback" not in done.stderr


UNEXPECTED = """
import sys
import click
from slipway.cli.main import main

@main.command("boom")
def boom() -> None:
    raise KeyError("the bug")


@main.command("bad-port")
@click.option("--port", type=int)
def bad_port(port: int) -> None:
    from pydantic import BaseModel, Field, ValidationError

    class Settings(BaseModel):
        port: int = Field(ge=1, le=65535)

    try:
        Settings(port=port)
    except ValidationError as exc:  # what a command that does not use cli.errors.invalid_options does
        raise click.BadParameter(str(exc)) from exc

sys.argv[0] = "slipway"
main()
"""


def test_an_unexpected_exception_is_an_error_line_with_the_debug_hint(tmp_path: Path) -> None:
    script = tmp_path / "slipway_with_a_bug.py"  # the real group, with one command that has a bug
    script.write_text(UNEXPECTED)
    done = subprocess.run([sys.executable, str(script), "boom"], capture_output=True, text=True, timeout=60)
    assert done.returncode == ExitCode.FAILED
    assert done.stderr.splitlines() == [
        "error: unexpected KeyError: 'the bug' (rerun with --debug for the traceback)"
    ]
    debug = subprocess.run(
        [sys.executable, str(script), "--debug", "boom"], capture_output=True, text=True, timeout=60
    )
    assert debug.returncode == ExitCode.FAILED
    assert debug.stderr.startswith("Traceback (most recent call last)")
    assert 'raise KeyError("the bug")' in debug.stderr
    assert debug.stderr.splitlines()[-1] == "error: unexpected KeyError: 'the bug'"


def test_a_validation_error_passed_on_as_bad_parameter_reads_as_one_line(tmp_path: Path) -> None:
    script = tmp_path / "slipway_with_a_bug.py"
    script.write_text(UNEXPECTED)
    done = subprocess.run(
        [sys.executable, str(script), "bad-port", "--port", "0"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.splitlines()[-1] == (
        "error: invalid value: --port: Input should be greater than or equal to 1 (got 0)"
    )


# ----------------------------------------------------------------------------------------------------------
# What stays true without a process


def test_help_lists_each_lazy_command_with_its_own_first_sentence() -> None:
    """`slipway --help` shows LAZY_COMMANDS' lines without importing the modules: they must stay the
    commands' own."""
    ctx = click.Context(main)
    for name, (_, _, line) in LAZY_COMMANDS.items():
        command = main.get_command(ctx, name)
        assert command is not None, name
        assert click.Command(name, help=line).get_short_help_str(500) == command.get_short_help_str(500), (
            f"LAZY_COMMANDS[{name!r}] in cli/main.py: use the command's first sentence"
        )


def test_the_exit_code_table_in_the_readme_is_exit_code() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", section, flags=re.MULTILINE)}
    assert documented == {code.value for code in ExitCode}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("600", 600), ("90s", 90), ("1.5m", 90), ("2h", 7200), ("1m30s", 90), ("500ms", 0.5), ("7d", 604800)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "m", "-1s", "1s2", "inf", "nan"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_old_spellings_still_parse_but_help_shows_the_new_ones() -> None:
    from slipway.cli.deploy import deploy

    old = ["--name", "m", "--namespace", "ns", "--storage-uri", "s3://b/m", "--format", "onnx"]
    old += ["--timeout-s", "30", "--poll-s", "0.5", "--analysis-s", "60", "--analysis-interval-s", "10"]
    new = ["m", "-n", "ns", "--storage-uri", "s3://b/m", "--format", "onnx"]
    new += ["--timeout", "30s", "--poll-interval", "500ms"]
    new += ["--analysis-window", "1m", "--analysis-interval", "10"]
    keys = ("timeout_s", "poll_s", "analysis_s", "analysis_interval_s", "namespace")
    parsed = [deploy.make_context("deploy", args).params for args in (old, new)]
    assert [p["name"] or p["name_flag"] for p in parsed] == ["m", "m"]
    assert [tuple(p[k] for k in keys) for p in parsed] == [(30.0, 0.5, 60.0, 10.0, "ns")] * 2
    text = deploy.get_help(click.Context(deploy, info_name="deploy"))
    assert "--timeout DURATION" in text and "-n, --namespace" in text and "-o, --output [json|yaml]" in text
    assert not re.search(r"--(timeout|poll|analysis|analysis-interval)-s\b|--name\b", text)

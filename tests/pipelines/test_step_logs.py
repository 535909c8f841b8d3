"""`slipway run`'s quiet console under a real kfp.local run of a tiny pipeline: one line per step, each step's
output in its own log file. It fails if kfp.local changes the log lines the step table is driven by."""

import contextlib
import io
import sys
from pathlib import Path

from kfp import dsl, local

from slipway.cli.step_progress import quiet_steps


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def shout(word: str) -> str:
    import sys

    for i in range(200):
        print(f"{word} line {i}")
    print(f"{word} on stderr", file=sys.stderr)
    return word.upper()


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def explode(word: str) -> str:
    print(f"about to fail on {word}")
    raise ValueError(f"no {word} here")


@dsl.pipeline(name="two-steps")
def two_steps(fail: bool = False) -> None:
    first = shout(word="hello").set_display_name("say-hello")
    with dsl.If(fail == True):  # noqa: E712 (a KFP condition, not a Python comparison)
        explode(word=first.output).set_display_name("explode")
    with dsl.Else():
        shout(word=first.output).set_display_name("say-again")


TASKS = {"shout": "say-hello", "explode": "explode", "shout-2": "say-again"}


def run(tmp_path: Path, fail: bool) -> tuple[list[str], Path, BaseException | None]:
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "root"),
        raise_on_error=True,
    )
    console = io.StringIO()
    error = None
    with contextlib.redirect_stdout(console):
        try:
            with quiet_steps(TASKS, tmp_path / "logs", lambda task, step: f"key of {step}"):
                two_steps(fail=fail)
        except RuntimeError as err:
            error = err
    return console.getvalue().splitlines(), tmp_path / "logs", error


def test_each_step_is_one_console_line_and_its_output_a_log_file(tmp_path: Path) -> None:
    stdout = sys.stdout
    lines, logs, error = run(tmp_path, fail=False)
    assert error is None and sys.stdout is stdout  # restored
    # a start and an end line per step that ran, one for the branch not taken; nothing else
    assert len(lines) == 5, lines
    assert lines[0].split() == ["…", "say-hello", "running"]
    assert lines[1].split()[:3] == ["✓", "say-hello", "succeeded"] and lines[1].endswith("key of say-hello")
    assert lines[-1].split() == ["-", "explode", "skipped"]
    hello = (logs / "say-hello.log").read_text()
    assert "hello line 199" in hello and "hello on stderr" in hello  # the task's stdout and stderr
    assert "HELLO line 0" in (logs / "say-again.log").read_text()
    assert "HELLO line 0" not in hello  # one file per step
    assert not (logs / "explode.log").exists()
    assert "Running pipeline" in (logs / "pipeline.log").read_text()


def test_a_failing_step_is_marked_failed_and_its_log_holds_the_traceback(tmp_path: Path) -> None:
    lines, logs, error = run(tmp_path, fail=True)
    assert error is not None
    failed = [line for line in lines if "explode" in line]
    assert failed[-1].split()[:3] == ["✗", "explode", "failed"], lines
    log = (logs / "explode.log").read_text()
    assert "about to fail on HELLO" in log and "ValueError: no HELLO here" in log


def test_verbose_streams_everything_and_still_files_it(tmp_path: Path) -> None:
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    console = io.StringIO()
    with (
        contextlib.redirect_stdout(console),
        quiet_steps(TASKS, tmp_path / "logs", lambda task, step: "", verbose=True),
    ):
        two_steps(fail=False)
    assert "hello line 199" in console.getvalue()
    assert "hello line 199" in (tmp_path / "logs" / "say-hello.log").read_text()

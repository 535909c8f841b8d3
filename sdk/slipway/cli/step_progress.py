"""A quiet `slipway run`: one line per step on the console, each step's full output in `<run>/logs/<step>.log`.

kfp.local writes everything to `sys.stdout`: its own progress (a logging handler it binds to `sys.stdout` as
each task starts) and each task's output (the subprocess's stdout and stderr, echoed with `print`). So
redirecting `sys.stdout` for the length of the run captures all of it, with no patch to kfp; the lines kfp.local
logs around each task ("Executing task 'x'", "Task 'x' finished with status SUCCESS") split the stream into
one file per step and drive the step table.
"""

from __future__ import annotations

import io
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table

from slipway.core.logs import output_console

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# kfp.local's own log lines (kfp/local/task_dispatcher.py), after its colours are stripped.
STARTED = re.compile(r" - INFO - Executing task '(?P<task>[^']+)'$")
FINISHED = re.compile(
    r" - (?:INFO|ERROR) - Task '(?P<task>[^']+)' finished with status (?P<status>SUCCESS|FAILURE)"
)
TASK_END = re.compile(r"^-{20,}$")  # kfp.local's horizontal line after each task's outputs
STREAM_INDENT = "    "  # kfp.local indents the task's streamed output by four spaces
PIPELINE_LOG = "pipeline.log"  # kfp.local's lines outside any task

RowStatus = Literal["pending", "running", "succeeded", "failed", "skipped"]
MARKS = {"pending": " ", "running": "…", "succeeded": "✓", "failed": "✗", "skipped": "-"}
COLOURS = {"pending": "dim", "running": "cyan", "succeeded": "green", "failed": "red", "skipped": "dim"}


@dataclass
class StepRow:
    """One step as the table shows it."""

    step: str
    status: RowStatus = "pending"
    started: float | None = None
    duration_s: float | None = None
    key: str = ""
    log: Path | None = None


class StepBoard:
    """The steps of one run and their progress: a live table on a terminal, plain lines elsewhere (CI, pipes)."""

    def __init__(
        self, tasks: dict[str, str], console: Console, key_of: Callable[[str, str], str], live: bool
    ) -> None:
        """`tasks` maps kfp.local's task names to display names, in run order; `key_of(task, display)` is the
        one number worth showing for a finished step."""
        self.rows = {task: StepRow(display) for task, display in tasks.items()}
        self.console = console
        self.key_of = key_of
        self.live = live

    def started(self, task: str, log: Path) -> None:
        row = self.row(task)
        row.status, row.started, row.log = "running", time.monotonic(), log
        if not self.live:
            self._print(row)

    def finished(self, task: str, ok: bool) -> None:
        row = self.row(task)
        row.status = "succeeded" if ok else "failed"
        row.duration_s = time.monotonic() - (row.started or time.monotonic())
        if ok:
            try:
                row.key = self.key_of(task, row.step)
            except (
                OSError,
                ValueError,
                KeyError,
                TypeError,
            ) as err:  # a number to show is never worth failing a run
                row.key = f"({type(err).__name__})"
        if not self.live:
            self._print(row)

    def close(self) -> None:
        """The run is over: a step still running was cut short (failed); one that never started was skipped."""
        for task, row in self.rows.items():
            if row.status == "running":
                self.finished(task, ok=False)
            elif row.status == "pending":
                row.status = "skipped"
                if not self.live:
                    self._print(row)

    def row(self, task: str) -> StepRow:
        if task not in self.rows:  # a task the pipeline spec did not list (kfp internals): shown as it is
            self.rows[task] = StepRow(task)
        return self.rows[task]

    def _print(self, row: StepRow) -> None:
        duration = f"{row.duration_s:6.1f} s" if row.duration_s is not None else " " * 8
        colour = COLOURS[row.status]
        self.console.print(
            f"[{colour}]{MARKS[row.status]} {row.step:<18} {row.status:<9}[/] {duration}  {row.key}".rstrip(),
            highlight=False,
        )

    def __rich__(self) -> RenderableType:
        table = Table("", "step", "status", "time", "result", box=None, header_style="bold", pad_edge=False)
        now = time.monotonic()
        for row in self.rows.values():
            if row.duration_s is not None:
                duration = f"{row.duration_s:.1f} s"
            elif row.started is not None:
                duration = f"{now - row.started:.0f} s"
            else:
                duration = ""
            colour = COLOURS[row.status]
            table.add_row(
                f"[{colour}]{MARKS[row.status]}[/]", row.step, f"[{colour}]{row.status}[/]", duration, row.key
            )
        return table


class StepLogSplitter(io.TextIOBase):
    """A text stream that files kfp.local's output by step and tells the board when a step starts and ends."""

    def __init__(self, log_dir: Path, board: StepBoard, echo: IO[str] | None = None) -> None:
        """`echo`, when given, also gets every line unchanged (`--verbose`: the full stream, as kfp prints it)."""
        self.log_dir = log_dir
        self.board = board
        self.echo = echo
        self._pending = ""
        self._pipeline_log = (log_dir / PIPELINE_LOG).open("w")
        self._step_log: IO[str] | None = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.echo is not None:
            self.echo.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def flush(self) -> None:
        if self.echo is not None:
            self.echo.flush()
        for log in (self._step_log, self._pipeline_log):
            if log is not None and not log.closed:
                log.flush()

    def close(self) -> None:
        if self._pending:
            self._line(self._pending)
            self._pending = ""
        self._end_step()
        self._pipeline_log.close()
        super().close()

    def _line(self, line: str) -> None:
        plain = ANSI.sub("", line)
        if started := STARTED.search(plain):
            self._end_step()
            task = started["task"]
            path = self.log_dir / f"{self.board.row(task).step}.log"
            self._step_log = path.open("a")  # a retried task appends its next attempt
            self.board.started(task, path)
        if self._step_log is None:
            self._pipeline_log.write(plain + "\n")
            return
        self._step_log.write(plain.removeprefix(STREAM_INDENT) + "\n")
        if finished := FINISHED.search(plain):
            self.board.finished(finished["task"], finished["status"] == "SUCCESS")
        elif TASK_END.match(plain):
            self._end_step()

    def _end_step(self) -> None:
        if self._step_log is not None:
            self._step_log.close()
            self._step_log = None


@contextmanager
def quiet_steps(
    tasks: dict[str, str], log_dir: Path, key_of: Callable[[str, str], str], verbose: bool = False
) -> Iterator[StepBoard]:
    """Inside: kfp.local's output goes to `log_dir/<step>.log` and stdout shows the step table (or, with
    `verbose`, the full stream as before, still filed by step)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for stale in log_dir.glob("*.log"):  # an earlier run into the same folder
        stale.unlink()
    out = sys.stdout  # bound now: inside, `sys.stdout` is the splitter
    console = output_console(file=out)
    live = console.is_terminal and not verbose
    board = StepBoard(tasks, console, key_of, live=live)
    splitter = StepLogSplitter(log_dir, board, echo=out if verbose else None)
    display = Live(board, console=console, refresh_per_second=4, redirect_stdout=False) if live else None
    try:
        if display is not None:
            display.start()
        with redirect_stdout(splitter):  # type: ignore[type-var]
            yield board
    finally:
        splitter.close()
        board.close()
        if display is not None:
            display.stop()

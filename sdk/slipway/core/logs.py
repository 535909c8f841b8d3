"""Structured, readable logs for the CLI and for every pipeline step (the same format in both)."""

from __future__ import annotations

import logging
import os
import sys
from typing import IO

from rich.console import Console
from rich.logging import RichHandler


def output_console(file: IO[str] | None = None) -> Console:
    """Where commands print tables: stdout (or `file`, bound now), 140 columns when it is not a terminal (logs,
    CI) so tables don't truncate."""
    target = file if file is not None else sys.stdout
    wide = not target.isatty() and "COLUMNS" not in os.environ
    return Console(file=file, width=140 if wide else None)


def setup_logging(level: str | None = None) -> None:
    """Idempotent: configures the `slipway` logger once, level from $SLIPWAY_LOG_LEVEL (default INFO)."""
    logger = logging.getLogger("slipway")
    if any(isinstance(h, RichHandler) for h in logger.handlers):
        return
    # stderr: stdout stays clean for what commands print (JSON, tables) and pipes.
    handler = RichHandler(
        console=Console(stderr=True),
        show_path=False,
        rich_tracebacks=False,
        markup=False,
        log_time_format="%H:%M:%S",
    )
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level or os.environ.get("SLIPWAY_LOG_LEVEL", "INFO"))
    logger.propagate = False

"""Click commands: `slipway monitor serve|export` and `slipway drift report`.

The lead registers them with `main.add_command(monitor_group, "monitor")` and
`main.add_command(drift_group, "drift")`. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from slipway.cli.errors import ExitCode, fail, invalid_options
from slipway.core.errors import SlipwayError
from slipway.serving.restricted import (
    MONITOR_FLAG,
    MONITOR_GROUPS,
    MONITOR_RESTRICTED_ENV,
    parse_restricted,
)

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line with the message and the `extra` fields: greppable and machine-readable."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "info") -> None:
    """Send slipway's and uvicorn's logs to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


@click.group("monitor")
def monitor_group() -> None:
    """Capture inference payloads and watch them for drift."""


@monitor_group.command("serve")
@click.option(
    "--reference",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Reference sample (NPZ with x[, y, probs], or CSV/Parquet). Without it, only capture.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where captured events (segments/) and drift reports (reports/) are kept.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (0.0.0.0 in a pod).")
@click.option("--port", default=8081, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--window-size", default=500, show_default=True, type=click.IntRange(2), help="Rows per drift window."
)
@click.option(
    "--drift-every",
    default=None,
    type=click.IntRange(0),
    help="New rows between drift runs [default: window size; 0 = only on POST /v1/drift/run].",
)
@click.option("--max-body-bytes", default=4 * 1024 * 1024, show_default=True, type=click.IntRange(1024))
@click.option(
    "--family-alpha",
    default=0.01,
    show_default=True,
    type=float,
    help="False-alarm probability per window (Bonferroni over drift columns).",
)
@click.option(
    "--alarm-share",
    default=None,
    type=float,
    help="Alarm when this share of columns drifts [default: any single column].",
)
@click.option("--input-name", default=None, help="Input tensor to monitor [default: the first].")
@click.option(
    "--output-name", default=None, help="Output tensor with scores/probabilities [default: the first]."
)
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
@click.option(
    "--restricted-api",
    "restricted_api",
    multiple=True,
    metavar="GROUPS:KEY=VALUE",
    envvar=MONITOR_RESTRICTED_ENV,
    show_envvar=True,
    help="Triton's restricted-API syntax: routes of GROUPS (comma-separated: ingest = /events, /v1/batches; "
    "feedback = /v1/feedback; admin = /v1/events, /v1/variants, /v1/drift/run, /v1/window, /v1/reference, "
    "/reports; health = /healthz; metrics = /metrics) answer 403 unless header KEY is VALUE; repeatable, each "
    "group in one flag; unlisted groups stay open.",
)
def serve_command(
    reference: Path | None,
    data_dir: Path,
    host: str,
    port: int,
    window_size: int,
    drift_every: int | None,
    max_body_bytes: int,
    family_alpha: float,
    alarm_share: float | None,
    input_name: str | None,
    output_name: str | None,
    log_level: str,
    restricted_api: tuple[str, ...],
) -> None:
    """Serve POST /events (KServe payload logger), /v1/batches, /v1/feedback, /metrics and /reports."""
    from pydantic import ValidationError

    from slipway.monitoring.drift import DriftConfig
    from slipway.monitoring.service import MonitorSettings, serve

    configure_logging(log_level)
    try:
        restricted = parse_restricted(restricted_api, MONITOR_FLAG, MONITOR_GROUPS)
    except SlipwayError as exc:
        fail(exc)
    if restricted:  # group and header names only: a value never reaches a log
        logging.getLogger(__name__).info("restricted --restricted-api: %s", restricted.summary())
    try:
        settings = MonitorSettings(
            data_dir=data_dir,
            reference=reference,
            host=host,
            port=port,
            window_size=window_size,
            drift_every=drift_every,
            max_body_bytes=max_body_bytes,
            input_name=input_name,
            output_name=output_name,
            drift=DriftConfig(family_alpha=family_alpha, alarm_share=alarm_share),
            restricted_api=restricted,
        )
    except ValidationError as exc:
        invalid_options(exc)
    try:
        serve(settings)
    except SlipwayError as exc:
        fail(exc)


@monitor_group.command("export")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Window file to write (.npz; .csv/.parquet for tabular inputs).",
)
@click.option("--last-n", default=500, show_default=True, type=click.IntRange(1))
@click.option("--input-name", default=None)
@click.option("--output-name", default=None)
def export_command(
    data_dir: Path, output: Path, last_n: int, input_name: str | None, output_name: str | None
) -> None:
    """Dump the last N captured rows as a window file (safe while the monitor runs)."""
    from slipway.monitoring.window import export_window

    try:
        path = export_window(data_dir, output, last_n, input_name, output_name)
    except SlipwayError as exc:
        fail(exc)
    click.echo(str(path))


@click.group("drift")
def drift_group() -> None:
    """Offline drift reports."""


@drift_group.command("report")
@click.option(
    "--reference",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Reference sample: NPZ (x[, y, probs]) or CSV/Parquet (tabular; y/label, prob_* columns).",
)
@click.option(
    "--current",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Current window, same format as the reference.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="HTML report to write; the JSON summary goes next to it (same name, .json).",
)
@click.option("--family-alpha", default=0.01, show_default=True, type=float)
@click.option("--alarm-share", default=None, type=float)
@click.option(
    "--fail-on-drift/--no-fail-on-drift",
    default=False,
    show_default=True,
    help=f"Exit with status {int(ExitCode.DRIFT)} when drift is detected (for CI and cron jobs).",
)
def report_command(
    reference: Path,
    current: Path,
    output: Path,
    family_alpha: float,
    alarm_share: float | None,
    fail_on_drift: bool,
) -> None:
    """Compare a current window with the reference using Evidently; print the verdict."""
    from pydantic import ValidationError
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    try:
        from slipway.monitoring.drift import DriftConfig, build_features, compute_drift, with_group_slices
        from slipway.monitoring.window import load_samples

        config = DriftConfig(family_alpha=family_alpha, alarm_share=alarm_share)
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("loading samples", total=3)
            ref, cur = load_samples(reference), load_samples(current)
            progress.update(task, advance=1, description="computing features")
            ref_set = build_features(ref.x, ref.probs, ref.y, ref.column_names)
            cur_set = build_features(cur.x, cur.probs, cur.y, cur.column_names)
            progress.update(task, advance=1, description="running Evidently")
            result = compute_drift(ref_set, cur_set, config, output.parent, report_id=output.stem)
            result = with_group_slices(result, ref_set, cur_set, reference, current, config)
            progress.update(task, advance=1)
        if result.html_path and Path(result.html_path) != output:
            Path(result.html_path).replace(output)
    except ValidationError as exc:
        invalid_options(exc)
    except SlipwayError as exc:
        fail(exc)
    verdict = "DRIFT" if result.drift_detected else "no drift"
    drifted = [c.name for c in result.columns if c.drifted]
    click.echo(
        f"{verdict}: {result.drifted_columns}/{len(result.columns)} columns drifted {drifted} "
        f"({result.alarm_rule}); report {output}, summary {result.json_path}"
    )
    for note in result.notes:
        click.echo(f"note: {note}")
    for g in result.slices:  # report only: docs/fairness.md
        click.echo(
            f"group {g.feature}={g.group}: {g.current_rows} rows, drift {g.drift_detected} {g.note or ''}"
        )
    if fail_on_drift and result.drift_detected:
        sys.exit(ExitCode.DRIFT)

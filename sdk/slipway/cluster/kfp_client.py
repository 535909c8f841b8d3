"""Submit, watch and schedule compiled pipelines on Kubeflow Pipelines (KFP REST API v2beta1, via kfp.Client).

The package arrives compiled (`slipway.cli.submission` compiles by pipeline name; the retrain step reads a
stored package) and is sent inline with the run. Credentials never travel with it: steps read them from
Kubernetes Secrets. The API token comes from `token=`, $SLIPWAY_KFP_TOKEN, or (no host given) the kube
credentials kfp.Client finds itself; it is never logged.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from slipway.cluster.kube import error_message
from slipway.core.errors import ClusterError, ConfigError, NotFoundError

log = logging.getLogger(__name__)

HOST_ENV = "SLIPWAY_KFP_HOST"
TOKEN_ENV = "SLIPWAY_KFP_TOKEN"
FINISHED_STATES = frozenset({"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"})
FAILED_STATES = frozenset({"FAILED", "CANCELED"})
DEFAULT_TIMEOUT_S = 6 * 3600.0


class RunFailedError(ClusterError):
    """A pipeline run ended FAILED or CANCELED; the message names the failed steps and the run's URL."""


@dataclass(frozen=True)
class RunInfo:
    """What Slipway reports about one KFP run."""

    run_id: str
    name: str
    state: str
    url: str
    experiment_id: str | None = None
    created_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    failed_tasks: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScheduleInfo:
    """A recurring run created by `schedule`."""

    recurring_run_id: str
    name: str
    cron: str
    experiment_id: str | None
    url: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Connection:
    """A connected kfp.Client plus where it points (never the token)."""

    client: Any
    host: str
    namespace: str | None


ProgressCallback = Callable[[RunInfo, float], None]


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value else None)


@contextlib.contextmanager
def _api(conn_host: str, what: str) -> Iterator[None]:
    """Turn kfp/HTTP failures into ClusterError/NotFoundError that say what failed and what to do."""
    import kfp_server_api
    import urllib3

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    except kfp_server_api.ApiException as err:
        status = getattr(err, "status", None)
        message = error_message(err)
        if status == 404:
            raise NotFoundError(f"{what}: not found at {conn_host} ({message})") from None
        if status in (401, 403):
            raise ClusterError(
                f"{what}: Kubeflow Pipelines at {conn_host} refused the credentials (HTTP {status}); "
                f"pass --token or set ${TOKEN_ENV} to a valid token"
            ) from None
        raise ClusterError(
            f"{what}: Kubeflow Pipelines at {conn_host} answered HTTP {status}: {message}"
        ) from None
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise ClusterError(
            f"{what}: cannot reach Kubeflow Pipelines at {conn_host} ({type(err).__name__}); check --host "
            "(e.g. `kubectl port-forward -n kubeflow svc/ml-pipeline 8888:8888` and --host http://127.0.0.1:8888)"
        ) from None


def _probe(host: str, token: str | None, timeout_s: float) -> None:
    """Fail fast with a clear message when the API is down or refuses us (kfp.Client retries for 25 s)."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{host}/apis/v2beta1/healthz"
    try:
        response = httpx.get(url, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as err:
        raise ClusterError(
            f"cannot reach Kubeflow Pipelines at {host} ({type(err).__name__}: {err}); check --host, and that "
            "the API is reachable from here (e.g. `kubectl port-forward -n kubeflow svc/ml-pipeline 8888:8888`)"
        ) from None
    if response.status_code in (401, 403):
        raise ClusterError(
            f"Kubeflow Pipelines at {host} refused the credentials (HTTP {response.status_code}); "
            f"pass --token or set ${TOKEN_ENV}"
        )
    if response.status_code >= 400:
        raise ClusterError(
            f"{url} answered HTTP {response.status_code}; is {host} the Kubeflow Pipelines API (v2)?"
        )


def connect(
    host: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    probe_timeout_s: float = 5.0,
) -> Connection:
    """A kfp.Client for `host` (or $SLIPWAY_KFP_HOST); with neither, kfp.Client uses the kube credentials."""
    import kfp

    host = (host or os.environ.get(HOST_ENV) or "").rstrip("/") or None
    token = token or os.environ.get(TOKEN_ENV) or None
    if host is not None:
        if not host.startswith(("http://", "https://")):
            raise ConfigError(f"--host must be an http(s) URL, got {host!r}")
        _probe(host, token, probe_timeout_s)
    kwargs: dict[str, Any] = {"host": host, "existing_token": token}
    if namespace:
        kwargs["namespace"] = namespace
    where = host or "the cluster of the current kube context"
    with _api(where, "connect"), contextlib.redirect_stdout(io.StringIO()):
        client = kfp.Client(**kwargs)
    log.info("connected to Kubeflow Pipelines host=%s namespace=%s auth=%s", where, namespace, bool(token))
    return Connection(client=client, host=host or where, namespace=namespace)


def _run_url(conn: Connection, run_id: str) -> str:
    return f"{conn.host}/#/runs/details/{run_id}"


def _run_info(conn: Connection, run: Any) -> RunInfo:
    failed: list[str] = []
    details = getattr(run, "run_details", None)
    for task in getattr(details, "task_details", None) or []:
        if str(task.state or "") in FAILED_STATES:
            reason = getattr(task.error, "message", None) if task.error else None
            failed.append(f"{task.display_name}: {reason}" if reason else str(task.display_name))
    error = getattr(run.error, "message", None) if run.error else None
    return RunInfo(
        run_id=str(run.run_id),
        name=str(run.display_name or ""),
        state=str(run.state or "RUNTIME_STATE_UNSPECIFIED"),
        url=_run_url(conn, str(run.run_id)),
        experiment_id=run.experiment_id,
        created_at=_iso(run.created_at),
        finished_at=_iso(run.finished_at),
        error=error,
        failed_tasks=tuple(failed),
    )


def _experiment_id(conn: Connection, name: str) -> str:
    with _api(conn.host, f"experiment {name!r}"), contextlib.redirect_stdout(io.StringIO()):
        experiment = conn.client.create_experiment(name=name, namespace=conn.namespace)
    return str(experiment.experiment_id)


def _kfp_cron(cron: str) -> str:
    """KFP wants 6 fields (seconds first); a standard 5-field cron gets '0' seconds."""
    fields = cron.split()
    if len(fields) == 5:
        return "0 " + " ".join(fields)
    if len(fields) == 6:
        return " ".join(fields)
    raise ConfigError(
        f"--cron {cron!r}: expected 5 fields (min hour day month weekday) or 6 (seconds first), got {len(fields)}"
    )


def get_run(
    run_id: str,
    host: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    *,
    connection: Connection | None = None,
) -> RunInfo:
    """The current state of one run."""
    conn = connection or connect(host, namespace, token)
    with _api(conn.host, f"run {run_id}"):
        run = conn.client.get_run(run_id)
    return _run_info(conn, run)


def list_runs(
    host: str | None = None,
    namespace: str | None = None,
    experiment: str | None = None,
    limit: int = 20,
    token: str | None = None,
    *,
    connection: Connection | None = None,
) -> list[RunInfo]:
    """The newest runs (of one experiment, by name, when given)."""
    conn = connection or connect(host, namespace, token)
    experiment_id = None
    if experiment:
        with _api(conn.host, f"experiment {experiment!r}"):
            try:
                experiment_id = conn.client.get_experiment(
                    experiment_name=experiment, namespace=namespace
                ).experiment_id
            except ValueError as err:  # kfp raises ValueError for an unknown name
                raise NotFoundError(f"experiment {experiment!r} not found at {conn.host}: {err}") from None
    with _api(conn.host, "list runs"):
        response = conn.client.list_runs(
            page_size=limit, sort_by="created_at desc", experiment_id=experiment_id, namespace=namespace
        )
    return [_run_info(conn, run) for run in response.runs or []]


def wait_for_run(
    run_id: str,
    host: str | None = None,
    namespace: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = 10.0,
    token: str | None = None,
    on_progress: ProgressCallback | None = None,
    *,
    connection: Connection | None = None,
) -> RunInfo:
    """Poll until the run finishes; raise RunFailedError when it fails and ClusterError on timeout."""
    conn = connection or connect(host, namespace, token)
    started = time.monotonic()
    last_state = None
    while True:
        info = get_run(run_id, connection=conn)
        elapsed = time.monotonic() - started
        if info.state != last_state:
            log.info("run %s state=%s elapsed_s=%.0f", run_id, info.state, elapsed)
            last_state = info.state
        if on_progress is not None:
            on_progress(info, elapsed)
        if info.state in FAILED_STATES:
            steps = "; ".join(info.failed_tasks) or "no step reported"
            raise RunFailedError(
                f"run {run_id} {info.state}: {info.error or 'no reason given'} (failed steps: {steps}); "
                f"logs: {info.url}"
            )
        if info.finished:
            return info
        if elapsed + poll_s > timeout_s:
            raise ClusterError(
                f"run {run_id} still {info.state} after {timeout_s:g} s; it goes on in the cluster: {info.url} "
                "(wait longer with `slipway runs get --wait`)"
            )
        time.sleep(poll_s)


def submit_package(
    package: str | Path,
    *,
    run_name: str,
    experiment: str,
    service_account: str | None = None,
    host: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    enable_caching: bool | None = None,
    arguments: dict[str, Any] | None = None,
    wait: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = 10.0,
    on_progress: ProgressCallback | None = None,
    connection: Connection | None = None,
) -> RunInfo:
    """Start a run of a compiled pipeline package; with `wait`, return when it has finished.

    `enable_caching=None` keeps the per-step choices compiled in (False forces every step to run);
    `arguments` override the package's parameter defaults for this run.
    """
    conn = connection or connect(host, namespace, token)
    with _api(conn.host, f"submit {run_name}"), contextlib.redirect_stdout(io.StringIO()):
        result = conn.client.create_run_from_pipeline_package(
            str(package),
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
            arguments=arguments or {},
            enable_caching=enable_caching,
            service_account=service_account,
        )
    info = _run_info(conn, result.run_info)
    log.info("submitted run=%r run_id=%s experiment=%s url=%s", run_name, info.run_id, experiment, info.url)
    if wait:
        return wait_for_run(
            info.run_id, timeout_s=timeout_s, poll_s=poll_s, on_progress=on_progress, connection=conn
        )
    return info


def schedule_package(
    package: str | Path,
    cron: str,
    *,
    name: str,
    experiment: str,
    description: str = "",
    service_account: str | None = None,
    max_concurrency: int = 1,
    catchup: bool = False,
    host: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    connection: Connection | None = None,
) -> ScheduleInfo:
    """A recurring run of a compiled package on a cron schedule (5 fields, or KFP's 6 with seconds first).

    `max_concurrency=1` and no catch-up by default: a retraining pipeline should not pile up behind itself.
    """
    if max_concurrency < 1:
        raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency}")
    kfp_cron = _kfp_cron(cron)
    conn = connection or connect(host, namespace, token)
    experiment_id = _experiment_id(conn, experiment)
    with _api(conn.host, f"schedule {name}"):
        job = conn.client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=name,
            description=description or f"slipway {name} on cron {kfp_cron!r}",
            cron_expression=kfp_cron,
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            pipeline_package_path=str(package),
            service_account=service_account,
        )
    info = ScheduleInfo(
        recurring_run_id=str(job.recurring_run_id),
        name=str(job.display_name or name),
        cron=kfp_cron,
        experiment_id=experiment_id,
        url=f"{conn.host}/#/recurringrun/details/{job.recurring_run_id}",
    )
    log.info("scheduled %s recurring_run_id=%s cron=%r", name, info.recurring_run_id, kfp_cron)
    return info

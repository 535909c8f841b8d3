"""Submit, watch and schedule compiled pipelines on Kubeflow Pipelines (KFP REST API v2beta1, via kfp.Client).

Where the API is: `host=` (the CLI's --host), else $SLIPWAY_KFP_HOST, else kfp's own $KF_PIPELINES_ENDPOINT,
else kfp.Client's discovery (in a pod: the in-cluster service and its service-account token; outside: the
current kube context, through the Kubernetes API server proxy). The token: `token=` or $SLIPWAY_KFP_TOKEN,
else whatever kfp.Client finds (the ways above, $KF_PIPELINES_IAP_OAUTH2_CLIENT_ID, ...); it is never logged.
The first healthz call is kfp.Client's own, with its credentials, made once and short instead of 5 x 5 s.

A package is uploaded as a version of a KFP pipeline (named after the compiled pipeline, the version after its
content digest) and runs are created from that version, so the KFP UI's Pipelines page lists what ran; `inline`
sends the spec with the run instead. Run links use kfp's UI address logic ($KF_PIPELINES_UI_ENDPOINT, else the
host when it serves the UI); with only an API address, links are None and the output says so.
Polls inside waits go through slipway.cluster.retry (transient API errors are retried, others are not).
Credentials never travel with a package: steps read them from Kubernetes Secrets.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from slipway.cluster.kube import error_message
from slipway.cluster.retry import call_with_retries
from slipway.core.errors import ClusterError, ConfigError, NotFoundError

log = logging.getLogger(__name__)

HOST_ENV = "SLIPWAY_KFP_HOST"
TOKEN_ENV = "SLIPWAY_KFP_TOKEN"
KFP_ENDPOINT_ENV = "KF_PIPELINES_ENDPOINT"  # kfp.Client's own (kfp.client.client.KF_PIPELINES_ENDPOINT_ENV)
KFP_UI_ENDPOINT_ENV = "KF_PIPELINES_UI_ENDPOINT"
FINISHED_STATES = frozenset({"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"})
FAILED_STATES = frozenset({"FAILED", "CANCELED"})
DEFAULT_TIMEOUT_S = 6 * 3600.0
KFP_DEFAULT_HOST = "http://localhost"  # kfp_server_api.Configuration's host when nothing set one
NO_UI = (
    "no KFP UI address known (the host serves only the API): set $KF_PIPELINES_UI_ENDPOINT, e.g. "
    "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80` and http://127.0.0.1:8080"
)
DISCOVERY_HINT = (
    "pass --host, set $SLIPWAY_KFP_HOST or $KF_PIPELINES_ENDPOINT (e.g. `kubectl port-forward -n kubeflow "
    "svc/ml-pipeline-ui 8080:80` and http://127.0.0.1:8080), or use a kube context that reaches the cluster"
)


class RunFailedError(ClusterError):
    """A pipeline run ended FAILED or CANCELED; the message names the failed steps and the run's URL."""


@dataclass(frozen=True)
class RunInfo:
    """What Slipway reports about one KFP run; `url` is its KFP UI page, None when no UI address is known."""

    run_id: str
    name: str
    state: str
    url: str | None
    experiment_id: str | None = None
    created_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    failed_tasks: tuple[str, ...] = ()
    pipeline_id: str | None = None
    pipeline_version_id: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def where(self) -> str:
        """The UI link, or how to look the run up without one."""
        return self.url or f"`slipway runs get {self.run_id}`"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PipelineVersion:
    """The KFP pipeline and version a package was uploaded as (`uploaded` False: an identical one existed)."""

    pipeline_id: str
    pipeline_name: str
    version_id: str
    version_name: str
    digest: str
    uploaded: bool
    url: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScheduleInfo:
    """A recurring run created by `schedule`."""

    recurring_run_id: str
    name: str
    cron: str
    experiment_id: str | None
    url: str | None
    pipeline_version: PipelineVersion | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Connection:
    """A connected kfp.Client, the API address it uses and the KFP UI's (None: unknown); never the token."""

    client: Any
    host: str
    namespace: str | None
    ui: str | None = None

    def ui_link(self, fragment: str) -> str | None:
        """`<ui>/#/<fragment>` as kfp links it (`%s/#/runs/details/%s`), or None without a UI address."""
        return f"{self.ui}/#/{fragment}" if self.ui else None


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
            "(e.g. `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80` and --host http://127.0.0.1:8080)"
        ) from None


HOST_NOTE = "kfp host: "


@functools.cache
def _client_class() -> type:
    """kfp.Client whose healthz check (the constructor's, on a fresh context) is one short try, not 5 x 5 s;
    a failure carries the address kfp.Client used (a note), which its discovery may have chosen."""
    import kfp

    class ProbingClient(kfp.Client):  # type: ignore[misc]
        def __init__(self, *args: Any, probe_timeout_s: float = 5.0, **kwargs: Any) -> None:
            self.probe_timeout_s = probe_timeout_s
            self.probed = False
            self.host_pinned = False
            super().__init__(*args, **kwargs)
            self.pin_host()

        def pin_host(self) -> None:
            """Keep the address kfp chose. Through a kube context with a token user, the kubernetes client's
            refresh hook resets `host` to the bare API server before every request, dropping kfp's service
            proxy path (kubeflow/pipelines#8313): every call would miss the KFP API."""
            config = self._existing_config
            hook = config.refresh_api_key_hook
            if self.host_pinned or hook is None:
                return
            host = config.host

            def refresh(configuration: Any) -> None:
                hook(configuration)  # it also installs itself again: keep this wrapper in its place
                configuration.host = host
                configuration.refresh_api_key_hook = refresh

            config.refresh_api_key_hook = refresh
            self.host_pinned = True

        def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
            self.probed = True
            self.pin_host()  # the constructor's call comes before __init__ returns
            try:
                return self._healthz_api.healthz_service_get_healthz(_request_timeout=self.probe_timeout_s)
            except Exception as err:
                err.add_note(HOST_NOTE + str(self._existing_config.host))
                raise

    return ProbingClient


@contextlib.contextmanager
def _first_contact(where: str, discovered: bool) -> Iterator[None]:
    """What a failed first contact means: no API found, unreachable, refused credentials, or not the KFP API."""
    import kfp_server_api
    import urllib3

    hint = DISCOVERY_HINT if discovered else "check --host / $SLIPWAY_KFP_HOST / $KF_PIPELINES_ENDPOINT"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    except (kfp_server_api.ApiException, urllib3.exceptions.HTTPError, OSError) as err:
        notes = [n for n in getattr(err, "__notes__", []) if n.startswith(HOST_NOTE)]
        used = notes[-1][len(HOST_NOTE) :].rstrip("/") if notes else where
        if discovered and used == KFP_DEFAULT_HOST:
            raise ClusterError(
                f"no Kubeflow Pipelines API found: kfp.Client found no kube context to reach it; {hint}"
            ) from None
        status = getattr(err, "status", None) if isinstance(err, kfp_server_api.ApiException) else None
        if status in (401, 403):
            raise ClusterError(
                f"Kubeflow Pipelines at {used} refused the credentials (HTTP {status}); "
                f"pass --token or set ${TOKEN_ENV}"
            ) from None
        if status:
            raise ClusterError(
                f"{used}/apis/v2beta1/healthz answered HTTP {status}; is {used} the Kubeflow Pipelines API "
                f"(v2)? {hint}"
            ) from None
        detail = " ".join(str(err).split())[:300]
        raise ClusterError(
            f"cannot reach Kubeflow Pipelines at {used} ({type(err).__name__}: {detail}); {hint}"
        ) from None


def _serves_ui(url: str, timeout_s: float) -> bool:
    """Whether `url` is the KFP UI (ml-pipeline-ui or the Kubeflow dashboard: HTML at /, or a login redirect),
    not only the API server (ml-pipeline:8888 answers 404 there)."""
    import httpx

    try:
        response = httpx.get(f"{url}/", headers={"Accept": "text/html"}, timeout=timeout_s)
    except httpx.HTTPError:
        return False
    if response.is_redirect:
        return True
    return response.status_code == 200 and "text/html" in response.headers.get("content-type", "")


def _ui_address(client: Any, ui_host: str | None, timeout_s: float) -> str | None:
    """kfp's UI address (`Client._get_url_prefix`: $KF_PIPELINES_UI_ENDPOINT, `ui_host`, else the API host);
    an API host must show that it serves the UI, and kfp's in-pod relative '/pipeline' is no link for a CLI."""
    prefix = str(client._get_url_prefix()).rstrip("/")
    if not prefix.startswith(("http://", "https://")):
        return None
    if ui_host or os.environ.get(KFP_UI_ENDPOINT_ENV):
        return prefix
    return prefix if _serves_ui(prefix, timeout_s) else None


def connect(
    host: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    probe_timeout_s: float = 5.0,
    ui_host: str | None = None,
) -> Connection:
    """A kfp.Client found as the module docstring says, checked with one healthz call."""
    host = (host or os.environ.get(HOST_ENV) or "").rstrip("/") or None
    token = token or os.environ.get(TOKEN_ENV) or None
    if host is not None and not host.startswith(("http://", "https://")):
        raise ConfigError(f"--host must be an http(s) URL, got {host!r}")
    discovered = host is None and not os.environ.get(KFP_ENDPOINT_ENV)
    if discovered and token:
        raise ConfigError(
            f"a token (--token or ${TOKEN_ENV}) needs a host (--host, ${HOST_ENV} or ${KFP_ENDPOINT_ENV}): "
            "without one kfp.Client reaches the API through the kube context, with its credentials"
        )
    where = host or os.environ.get(KFP_ENDPOINT_ENV) or "the cluster of the current kube context"
    cls = _client_class()
    with _first_contact(where, discovered), contextlib.redirect_stdout(io.StringIO()):
        # kfp.Client's `namespace` is where KFP is installed (proxy path, in-cluster DNS): left at its default;
        # a profile namespace goes with each call instead.
        client = cls(host=host, existing_token=token, ui_host=ui_host, probe_timeout_s=probe_timeout_s)
        if not client.probed:  # a kfp context file with a namespace skips the constructor's healthz call
            client.get_kfp_healthz()
    api_host = str(client._existing_config.host).rstrip("/")
    ui = _ui_address(client, ui_host, probe_timeout_s)
    log.info(
        "connected to Kubeflow Pipelines host=%s namespace=%s auth=%s ui=%s",
        api_host,
        namespace,
        "token" if token else "kfp.Client's own",
        ui or "unknown",
    )
    return Connection(client=client, host=api_host, namespace=namespace, ui=ui)


def _run_url(conn: Connection, run_id: str) -> str | None:
    return conn.ui_link(f"runs/details/{run_id}")


def _run_info(conn: Connection, run: Any) -> RunInfo:
    failed: list[str] = []
    details = getattr(run, "run_details", None)
    for task in getattr(details, "task_details", None) or []:
        if str(task.state or "") in FAILED_STATES:
            reason = getattr(task.error, "message", None) if task.error else None
            failed.append(f"{task.display_name}: {reason}" if reason else str(task.display_name))
    error = getattr(run.error, "message", None) if run.error else None
    reference = getattr(run, "pipeline_version_reference", None)
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
        pipeline_id=getattr(reference, "pipeline_id", None),
        pipeline_version_id=getattr(reference, "pipeline_version_id", None),
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


def _fetch_run(conn: Connection, run_id: str, retry_until: float | None = None) -> RunInfo:
    with _api(conn.host, f"run {run_id}"):
        run = call_with_retries(
            lambda: conn.client.get_run(run_id), what=f"polling run {run_id}", deadline=retry_until
        )
    return _run_info(conn, run)


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
    return _fetch_run(conn, run_id)


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
                    experiment_name=experiment, namespace=conn.namespace
                ).experiment_id
            except ValueError as err:  # kfp raises ValueError for an unknown name
                raise NotFoundError(f"experiment {experiment!r} not found at {conn.host}: {err}") from None
    with _api(conn.host, "list runs"):
        response = conn.client.list_runs(
            page_size=limit, sort_by="created_at desc", experiment_id=experiment_id, namespace=conn.namespace
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
    """Poll until the run finishes; raise RunFailedError when it fails and ClusterError on timeout.

    Transient API errors while polling (5xx, 429, a reset) are retried until the timeout; others end the wait.
    """
    conn = connection or connect(host, namespace, token)
    started = time.monotonic()
    last_state = None
    while True:
        info = _fetch_run(conn, run_id, retry_until=started + timeout_s)
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
                f"logs: {info.where}"
            )
        if info.finished:
            return info
        if elapsed + poll_s > timeout_s:
            raise ClusterError(
                f"run {run_id} still {info.state} after {timeout_s:g} s; it goes on in the cluster: {info.where} "
                "(wait longer with `slipway runs get --wait`)"
            )
        time.sleep(poll_s)


# --- pipelines and versions ------------------------------------------------------------------------------


def _pipeline_info(package: Path) -> tuple[str, str]:
    """The compiled pipeline's name and description (pipelineInfo), which name the KFP pipeline."""
    import yaml

    with package.open(encoding="utf-8") as fh:
        spec = next(yaml.safe_load_all(fh), None) or {}
    info = spec.get("pipelineInfo") or {}
    if not info.get("name"):
        raise ConfigError(f"{package}: not a compiled KFP pipeline (no pipelineInfo.name)")
    return str(info["name"]), str(info.get("description") or "")


def _with_caching(package: Path, enable_caching: bool, folder: Path) -> Path:
    """The package with every task's caching set, as kfp.Client sets it on an inline run (a version is run
    as uploaded, so the choice has to be in it)."""
    import yaml
    from google.protobuf import json_format
    from kfp.client import client as kfp_client_module

    doc = kfp_client_module._extract_pipeline_yaml(str(package))
    kfp_client_module._override_caching_options(doc.pipeline_spec, enable_caching)
    docs = [json_format.MessageToDict(doc.pipeline_spec)]
    if doc.platform_spec.ByteSize():
        docs.append(json_format.MessageToDict(doc.platform_spec))
    out = folder / f"{package.stem}-cache-{'on' if enable_caching else 'off'}.yaml"
    out.write_text(yaml.safe_dump_all(docs, sort_keys=True), encoding="utf-8")
    return out


def _equals_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def _find_pipeline(conn: Connection, name: str) -> str | None:
    """kfp's get_pipeline_id, within the connection's namespace (shared pipelines when it has none)."""
    if conn.namespace is None:
        found: str | None = conn.client.get_pipeline_id(name)
        return found
    response = conn.client.list_pipelines(filter=_equals_filter(name), namespace=conn.namespace)
    pipelines = response.pipelines or []
    return str(pipelines[0].pipeline_id) if pipelines else None


def _find_version(conn: Connection, pipeline_id: str, name: str) -> Any | None:
    response = conn.client.list_pipeline_versions(pipeline_id, page_size=1, filter=_equals_filter(name))
    versions = response.pipeline_versions or []
    return versions[0] if versions else None


def _digest_note(digest: str) -> str:
    return f"sha256:{digest}"


def upload_package(
    package: str | Path,
    *,
    version_name: str | None = None,
    connection: Connection,
) -> PipelineVersion:
    """Upload `package` as a version of the KFP pipeline named after it (created when missing).

    The version is named `sha256-<12 hex>` of the package unless `version_name` is given; an existing version
    of that name with the same content is reused, one with other content is an error (KFP keeps names unique).
    """
    import kfp_server_api

    conn = connection
    package = Path(package)
    pipeline_name, description = _pipeline_info(package)
    digest = hashlib.sha256(package.read_bytes()).hexdigest()
    version_name = version_name or f"sha256-{digest[:12]}"
    what = f"pipeline {pipeline_name!r}"
    with _api(conn.host, what), contextlib.redirect_stdout(io.StringIO()):
        pipeline_id = _find_pipeline(conn, pipeline_name)
        if pipeline_id is None:
            log.info("creating pipeline %r namespace=%s", pipeline_name, conn.namespace)
            try:
                created = conn.client.pipelines.pipeline_service_create_pipeline(
                    pipeline=kfp_server_api.V2beta1Pipeline(
                        display_name=pipeline_name, description=description, namespace=conn.namespace
                    )
                )
                pipeline_id = str(created.pipeline_id)
            except kfp_server_api.ApiException as err:
                if err.status != 409:  # 409: created meanwhile by someone else; use theirs
                    raise
                pipeline_id = _find_pipeline(conn, pipeline_name)
                if pipeline_id is None:
                    raise
        version = _find_version(conn, pipeline_id, version_name)
        uploaded = version is None
        if version is None:
            version = conn.client.upload_pipeline_version(
                str(package), version_name, pipeline_id=pipeline_id, description=_digest_note(digest)
            )
    if not uploaded and (version.description or "") != _digest_note(digest):
        raise ConfigError(
            f"--version-name {version_name!r}: pipeline {pipeline_name!r} already has a version of that name with "
            f"other content ({version.description or 'no digest recorded'}, this package is "
            f"{_digest_note(digest)}); choose another name or leave it out (the digest names the version)"
        )
    info = PipelineVersion(
        pipeline_id=pipeline_id,
        pipeline_name=pipeline_name,
        version_id=str(version.pipeline_version_id),
        version_name=version_name,
        digest=digest,
        uploaded=uploaded,
        url=conn.ui_link(f"pipelines/details/{pipeline_id}/version/{version.pipeline_version_id}"),
    )
    log.info(
        "%s pipeline=%r version=%r version_id=%s",
        "uploaded" if uploaded else "reusing identical",
        pipeline_name,
        version_name,
        info.version_id,
    )
    return info


@contextlib.contextmanager
def _prepared(package: str | Path, enable_caching: bool | None) -> Iterator[Path]:
    """The package as it will run: with the caching override baked in when one is given."""
    if enable_caching is None:
        yield Path(package)
        return
    with tempfile.TemporaryDirectory(prefix="slipway-package-") as tmp:
        yield _with_caching(Path(package), enable_caching, Path(tmp))


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
    version_name: str | None = None,
    inline: bool = False,
) -> RunInfo:
    """Upload the package as a pipeline version and start a run of it; with `wait`, return when it has finished.

    `enable_caching=None` keeps the per-step choices compiled in (False forces every step to run);
    `arguments` override the package's parameter defaults for this run; `inline` sends the spec with the run
    (no pipeline or version is created: for servers that refuse uploads).
    """
    conn = connection or connect(host, namespace, token)
    if inline:
        with _api(conn.host, f"submit {run_name}"), contextlib.redirect_stdout(io.StringIO()):
            result = conn.client.create_run_from_pipeline_package(
                str(package),
                run_name=run_name,
                experiment_name=experiment,
                namespace=conn.namespace,
                arguments=arguments or {},
                enable_caching=enable_caching,
                service_account=service_account,
            )
        run = result.run_info
    else:
        with _prepared(package, enable_caching) as prepared:
            version = upload_package(prepared, version_name=version_name, connection=conn)
        experiment_id = _experiment_id(conn, experiment)
        with _api(conn.host, f"submit {run_name}"), contextlib.redirect_stdout(io.StringIO()):
            run = conn.client.run_pipeline(
                experiment_id=experiment_id,
                job_name=run_name,
                params=arguments or {},
                pipeline_id=version.pipeline_id,
                version_id=version.version_id,
                service_account=service_account,
            )
    info = _run_info(conn, run)
    log.info(
        "submitted run=%r run_id=%s experiment=%s url=%s",
        run_name,
        info.run_id,
        experiment,
        info.url or NO_UI,
    )
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
    version_name: str | None = None,
    inline: bool = False,
) -> ScheduleInfo:
    """A recurring run of a compiled package on a cron schedule (5 fields, or KFP's 6 with seconds first),
    from an uploaded pipeline version (`inline`: the spec travels with the recurring run).

    `max_concurrency=1` and no catch-up by default: a retraining pipeline should not pile up behind itself.
    """
    if max_concurrency < 1:
        raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency}")
    kfp_cron = _kfp_cron(cron)
    conn = connection or connect(host, namespace, token)
    version = None if inline else upload_package(package, version_name=version_name, connection=conn)
    experiment_id = _experiment_id(conn, experiment)
    source: dict[str, Any] = (
        {"pipeline_package_path": str(package)}
        if version is None
        else {"pipeline_id": version.pipeline_id, "version_id": version.version_id}
    )
    with _api(conn.host, f"schedule {name}"):
        job = conn.client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=name,
            description=description or f"slipway {name} on cron {kfp_cron!r}",
            cron_expression=kfp_cron,
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            service_account=service_account,
            **source,
        )
    info = ScheduleInfo(
        recurring_run_id=str(job.recurring_run_id),
        name=str(job.display_name or name),
        cron=kfp_cron,
        experiment_id=experiment_id,
        url=conn.ui_link(f"recurringrun/details/{job.recurring_run_id}"),
        pipeline_version=version,
    )
    log.info("scheduled %s recurring_run_id=%s cron=%r", name, info.recurring_run_id, kfp_cron)
    return info

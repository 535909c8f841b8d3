"""`slipway experiment start|status|stop`: an A/B experiment between two registered versions of one model.

Locally the experiment lives in a running `slipway serve` (explicit model-control mode), which splits traffic
and persists the split in its repository; the monitor joins feedback to the version that answered; `status`
reads both and applies the sequential test. In the cluster it lives in an InferenceGraph (`-n NAMESPACE`).

Exit codes: 0 done; 1 failed; 2 bad option or spec; `status --watch`: 3 when it stopped the experiment on a
guardrail breach (the champion kept serving), 4 when --timeout passed before a final verdict.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import click
import yaml

from slipway.cli.errors import ExitCode, fail
from slipway.cli.options import Duration, option
from slipway.core.errors import ConfigError, SlipwayError
from slipway.core.logs import output_console, setup_logging

EXIT_GUARDRAIL = ExitCode.REJECTED
EXIT_TIMEOUT = ExitCode.NO_VERDICT
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_MONITOR_URL = "http://127.0.0.1:8081"

if TYPE_CHECKING:
    from slipway.experiments.spec import Health, Variant

console = output_console()


def _emit(document: dict[str, Any], output: str) -> None:
    if output == "json":
        click.echo(json.dumps(document, indent=2, sort_keys=True))
    elif output == "yaml":
        click.echo(yaml.safe_dump(document, sort_keys=False), nl=False)
    else:
        _table(document)


def _table(document: dict[str, Any]) -> None:
    from rich.table import Table

    spec, decision = document["spec"], document.get("decision")
    console.print(
        f"experiment {spec['name']} on {spec['model']}: A = v{spec['a']}, B = v{spec['b']} "
        f"({spec['b_share']:.0%} of traffic to B), metric {spec['metric']}"
    )
    if decision is None:
        return
    table = Table("variant", "version", "rows", spec["metric"], "requests", "errors", "p99 ms")
    for variant in ("a", "b"):
        health = document["health"].get(variant) or {}
        p99 = health.get("p99_ms")
        table.add_row(
            variant.upper(),
            spec[variant],
            str(decision[f"n_{variant}"]),
            f"{decision[f'mean_{variant}']:.4f}",
            str(health.get("requests", "-")),
            str(health.get("errors", "-")),
            "-" if p99 is None else f"{p99:.1f}",
        )
    console.print(table)
    console.print(
        f"effect B - A: {decision['effect']:+.4f}  [{decision['ci_low']:+.4f}, {decision['ci_high']:+.4f}]  "
        f"always-valid p = {decision['p_value']:.4f}"
    )
    final = "final" if decision["final"] else "running"
    console.print(f"verdict: [bold]{decision['verdict']}[/bold] ({final}): {decision['reason']}")


def _client(url: str) -> Any:
    from slipway.serving.client import InferenceClient

    return InferenceClient(url)


def _registry(tracking_uri: str | None, model: str) -> Any:
    from slipway.core.config import RegistryConfig

    return RegistryConfig(tracking_uri=tracking_uri, model_name=model)


def _aliased_version(tracking_uri: str | None, model: str, alias: str, option: str) -> str:
    from slipway import registry

    if tracking_uri is None:
        raise ConfigError(f"{option}: give a version, or --tracking-uri to take the {alias!r} alias's")
    return registry.version_by_alias(_registry(tracking_uri, model), alias)


def _stage_missing(model: str, versions: list[str], repository: str, tracking_uri: str | None) -> list[str]:
    """Copy each version the served repository lacks from the registry (digest-verified); returns those."""
    import tempfile
    from pathlib import Path

    from slipway import registry
    from slipway.serving.triton_repository import stage_version

    staged = []
    for version in versions:
        if (Path(repository) / model / version).is_dir():
            continue
        if tracking_uri is None:
            raise ConfigError(
                f"--repository {repository} has no {model}/{version}: give --tracking-uri to stage it "
                "from the registry, or copy it there"
            )
        with tempfile.TemporaryDirectory() as tmp:
            downloaded = registry.download_model_repository(_registry(tracking_uri, model), version, tmp)
            stage_version(downloaded / model, int(version), repository)
        staged.append(version)
    return staged


class LocalExperiments:
    """The experiment in a running `slipway serve`: it splits the traffic and exports per-variant metrics."""

    def __init__(self, url: str) -> None:
        self.url = url

    def start(self, spec: Any) -> dict[str, Any]:
        with _client(self.url) as client:
            served: dict[str, Any] = client.start_experiment(spec.model, spec.model_dump())
        return served

    def spec(self, model: str) -> Any:
        from slipway.experiments.spec import parse_spec

        with _client(self.url) as client:
            return parse_spec(client.experiment(model)["spec"], "server experiment")

    def health(self, spec: Any) -> dict[Variant, Health]:
        from slipway.experiments.evidence import server_health

        return server_health(self.url, spec)

    def stop(self, spec: Any, keep: str) -> dict[str, Any]:
        with _client(self.url) as client:
            stopped: dict[str, Any] = client.stop_experiment(spec.model, keep)
        return stopped


class KubeExperiments:
    """The experiment in a cluster: a challenger InferenceService and an InferenceGraph splitting traffic; health
    from Prometheus. Selected by -n/--namespace; the experiment is found by --name (the graph's name)."""

    def __init__(self, opts: dict[str, Any]) -> None:
        self.opts = opts
        self.namespace: str = opts["namespace"]

    def _experiments(self) -> Any:
        from slipway.cluster.experiment import ClusterExperiments
        from slipway.cluster.kube import custom_objects_api
        from slipway.cluster.prometheus import PrometheusClient

        url = self.opts.get("prometheus_url")
        prometheus = PrometheusClient(url) if url else None
        api = (
            None
            if self.opts.get("dry_run")
            else custom_objects_api(self.opts["kubeconfig"], self.opts["context"])
        )
        return ClusterExperiments(api, prometheus)

    def start(self, spec: Any) -> dict[str, Any]:
        from slipway.cluster.experiment import build_experiment_objects

        if not self.opts.get("storage_uri"):
            raise ConfigError(
                "--storage-uri: the Triton model repository holding version B (s3://, gs://, pvc://)"
            )
        objects = build_experiment_objects(
            spec,
            self.namespace,
            self.opts["isvc"] or spec.model,
            self.opts["storage_uri"],
            logger_url=self.opts["logger_url"],
            service_account=self.opts["service_account"],
        )
        created = self._experiments().start(objects, dry_run=self.opts["dry_run"])
        return {"spec": spec.model_dump(), "objects": created, "dry_run": self.opts["dry_run"]}

    def spec(self, model: str) -> Any:
        name = self.opts.get("name")
        if not name:
            raise ConfigError("--name: with -n/--namespace, name the experiment (its InferenceGraph)")
        spec = self._experiments().get(name, self.namespace)
        if spec.model != model:
            raise ConfigError(
                f"experiment {name!r} in {self.namespace} is on model {spec.model!r}, not {model!r}"
            )
        return spec

    def health(self, spec: Any) -> dict[Variant, Health]:
        window_s = max(60.0, time.time() - spec.started_at)
        return self._experiments().health(spec.name, self.namespace, window_s)  # type: ignore[no-any-return]

    def stop(self, spec: Any, keep: str) -> dict[str, Any]:
        stopped: dict[str, Any] = self._experiments().stop(spec.name, self.namespace, keep)
        return stopped


def _backend(opts: dict[str, Any]) -> LocalExperiments | KubeExperiments:
    return KubeExperiments(opts) if opts.get("namespace") else LocalExperiments(opts["url"])


def _evidence(backend: LocalExperiments | KubeExperiments, spec: Any, monitor_url: str) -> dict[str, Any]:
    """Status document: the spec, the per-variant health and the decision, read from server and monitor."""
    from dataclasses import asdict

    from slipway.experiments.decision import decide
    from slipway.experiments.evidence import moments, monitor_variants

    variants = monitor_variants(monitor_url, spec)
    health = backend.health(spec)
    metric = moments(variants.get("variants", {}), spec)
    decision = decide(spec, metric["a"], metric["b"], health["a"], health["b"], time.time())
    return {
        "spec": spec.model_dump(),
        "health": {v: asdict(h) for v, h in health.items()},
        "decision": decision.to_dict(),
    }


_url_option = click.option(
    "--url", default=DEFAULT_URL, show_default=True, help="the `slipway serve` that splits the traffic"
)
_monitor_option = click.option(
    "--monitor-url",
    default=DEFAULT_MONITOR_URL,
    show_default=True,
    help="the drift monitor the payload logger posts to (labels and scores arrive there as feedback)",
)
_tracking_option = click.option(
    "--tracking-uri", default=None, help="MLflow registry of MODEL (versions by alias, promotion)"
)
_output_option = click.option(
    "-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True
)


def _cluster_options(fn: Any) -> Any:
    """-n selects the cluster: the experiment is an InferenceGraph there, not a split in `slipway serve`."""
    for cluster_option in reversed(
        [
            click.option("-n", "--namespace", default=None, help="run it in the cluster, in this namespace"),
            click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None),
            click.option("--context", default=None, help="kubeconfig context"),
            click.option("--prometheus-url", default=None, help="cluster: Prometheus for the guardrails"),
        ]
    ):
        fn = cluster_option(fn)
    return fn


@click.group("experiment")
def experiment_group() -> None:
    """A/B experiments between two versions of a model: start, status, stop."""
    setup_logging()


@experiment_group.command("start")
@click.argument("model")
@click.option("--name", default=None, help="experiment name (default: ab-<UTC time>); a DNS label")
@click.option("--a", "version_a", default=None, help="version of variant A (default: the champion alias)")
@click.option("--b", "version_b", default=None, help="version of variant B (default: the challenger alias)")
@click.option("--split", type=float, default=0.5, show_default=True, help="share of traffic to B")
@click.option("--metric", type=click.Choice(["accuracy", "score"]), default="accuracy", show_default=True)
@click.option("--mde", type=float, default=0.02, show_default=True, help="minimum detectable effect")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="false-winner rate")
@click.option("--min-samples", type=int, default=200, show_default=True, help="labelled rows per variant")
@click.option("--max-samples", type=int, default=None, help="labelled rows per variant that end it")
@click.option("--max-duration", type=Duration(1), default="7d", show_default=True, help="e.g. 90m, 12h, 7d")
@click.option("--max-error-rate", type=float, default=0.05, show_default=True, help="guardrail on B")
@click.option("--max-p99-ms", type=float, default=None, help="guardrail on B's p99 latency")
@click.option("--repository", default=None, help="local: the server's repository, to stage missing versions")
@_url_option
@_tracking_option
@_cluster_options
@click.option("--isvc", default=None, help="cluster: the champion's InferenceService (default: MODEL)")
@click.option("--storage-uri", default=None, help="cluster: the Triton repository holding version B")
@click.option("--logger-url", default=None, help="cluster: B's payload logger sink (the monitor's /events)")
@click.option("--service-account", default=None, help="cluster: B's service account (storage credentials)")
@click.option("--dry-run", is_flag=True, help="cluster: print the objects that would be created; create none")
@_output_option
def start(model: str, **opts: Any) -> None:
    """Split MODEL's traffic between versions A and B: in a running `slipway serve`, or with -n in the cluster."""
    from datetime import UTC, datetime

    from slipway.experiments.spec import parse_spec

    try:
        a = opts["version_a"] or _aliased_version(opts["tracking_uri"], model, "champion", "--a")
        b = opts["version_b"] or _aliased_version(opts["tracking_uri"], model, "challenger", "--b")
        spec = parse_spec(
            {
                "name": opts["name"] or datetime.now(UTC).strftime("ab-%Y%m%d-%H%M%S"),
                "model": model,
                "a": a,
                "b": b,
                "b_share": opts["split"],
                "metric": opts["metric"],
                "mde": opts["mde"],
                "alpha": opts["alpha"],
                "min_samples": opts["min_samples"],
                "max_samples": opts["max_samples"],
                "max_duration_s": opts["max_duration"],
                "guardrails": {"max_error_rate": opts["max_error_rate"], "max_p99_ms": opts["max_p99_ms"]},
                "started_at": time.time(),
            },
            "options",
        )
        staged = []
        if opts["repository"] and not opts["namespace"]:
            staged = _stage_missing(model, [a, b], opts["repository"], opts["tracking_uri"])
        started = _backend(opts).start(spec)
    except SlipwayError as err:
        fail(err, "experiment start")
    if (
        opts["dry_run"] and opts["namespace"]
    ):  # as kubectl prints it: a List in JSON, YAML documents otherwise
        objects = started["objects"]
        if opts["output"] == "json":
            click.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
        else:
            click.echo(yaml.safe_dump_all(objects, sort_keys=False), nl=False)
        return
    _emit({**started, "staged_versions": staged}, opts["output"])


@experiment_group.command("status")
@click.argument("model")
@click.option("--name", default=None, help="cluster: the experiment's name")
@_url_option
@_monitor_option
@_cluster_options
@click.option("--watch", is_flag=True, help="re-check until the verdict is final; stop on a guardrail breach")
@option(
    "--poll-interval",
    "interval_s",
    aliases=["--interval-s"],
    type=Duration(0.1),
    default="10s",
    show_default=True,
)
@option(
    "--timeout",
    "timeout_s",
    aliases=["--timeout-s"],
    type=Duration(1),
    help="--watch: give up after this long",
)
@_output_option
def status(model: str, **opts: Any) -> None:
    """The experiment on MODEL: per-variant metric and guardrails, the effect with its always-valid interval,
    and the verdict. With --watch a guardrail breach stops it at once, keeping A (the champion)."""
    watch = opts["watch"]
    deadline = None if opts["timeout_s"] is None else time.monotonic() + opts["timeout_s"]
    backend = _backend(opts)
    try:
        spec = backend.spec(model)
        while True:
            document = _evidence(backend, spec, opts["monitor_url"])
            decision = document["decision"]
            if not watch or decision["final"]:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            console.print(f"{decision['verdict']}: {decision['reason']}", highlight=False)
            time.sleep(opts["interval_s"])
        if watch and decision["verdict"] == "guardrail_breached":
            document["stopped"] = backend.stop(spec, "a")
    except SlipwayError as err:
        fail(err, "experiment status")
    _emit(document, opts["output"])
    if watch and decision["verdict"] == "guardrail_breached":
        raise SystemExit(EXIT_GUARDRAIL)
    if watch and not decision["final"]:
        raise SystemExit(EXIT_TIMEOUT)


@experiment_group.command("stop")
@click.argument("model")
@click.option("--name", default=None, help="cluster: the experiment's name")
@click.option("--keep", type=click.Choice(["a", "b"]), default=None, help="the version that keeps serving")
@click.option(
    "--promote-winner",
    is_flag=True,
    help="keep the winner the test declared and move the registry's champion alias to it",
)
@_url_option
@_monitor_option
@_tracking_option
@_cluster_options
@_output_option
def stop(model: str, **opts: Any) -> None:
    """End the experiment on MODEL: one version keeps serving (--keep, or the winner with --promote-winner)."""
    keep, promote_winner = opts["keep"], opts["promote_winner"]
    if keep is not None and promote_winner:
        fail(ConfigError("--keep and --promote-winner: give one (the winner decides with --promote-winner)"))
    if keep is None and not promote_winner:
        fail(ConfigError("give --keep a|b, or --promote-winner to keep the version the test declared better"))
    backend = _backend(opts)
    try:
        spec = backend.spec(model)
        document: dict[str, Any] = {"spec": spec.model_dump()}
        if promote_winner:
            if opts["tracking_uri"] is None:
                raise ConfigError("--promote-winner: give --tracking-uri to move the champion alias")
            document = _evidence(backend, spec, opts["monitor_url"])
            decision = document["decision"]
            if not decision["final"]:
                raise ConfigError(
                    f"--promote-winner: no final verdict yet ({decision['verdict']}: {decision['reason']}); "
                    "wait for one (status --watch), or stop with --keep a|b"
                )
            keep = "b" if decision["verdict"] == "b_better" else "a"  # otherwise the champion stays
        document["stopped"] = backend.stop(spec, keep)
        if promote_winner and keep == "b":
            from slipway import registry

            promoted = registry.promote(_registry(opts["tracking_uri"], model), spec.b)
            document["promoted"] = promoted.model_dump()
    except SlipwayError as err:
        fail(err, "experiment stop")
    _emit(document, opts["output"])

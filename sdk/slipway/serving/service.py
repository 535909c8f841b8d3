"""The protocol-independent core both front ends call: model lookup, inference, metadata, config, statistics,
and Triton's model control (load, reload, unload, repository index).

HTTP and gRPC run on one event loop and share these batchers, so requests from both protocols batch together
and the queue limit covers the whole server.

A reload never fails a request: the new version is loaded off the loop and its batcher started first; then the
model and statistics entries are replaced in one step with no await in between (atomic on the event
loop), so each request is validated and queued against one version; the old batcher keeps working until its
queue is empty (`ModelBatcher.drain`), and `infer` finds a request's batcher by the model object it was
validated against, never by name.

An A/B experiment (`serving/experiment.py`) serves two versions under one name: `models[name]` is variant A's
(metadata, config and validation defaults), the experiment holds both, and each inference request without a
version in its path is assigned to a variant by its key. Starting and stopping one swap in the same way as a
reload: load off the loop, switch with no await, drain what is no longer routed to.

Model control mode poll (`serving/repository_poll.py`) applies the repository's changes through the same load,
swap and unload; a model split by an experiment is left as it is. A reload that fails there has no caller to
answer, so the repository index shows it (an UNAVAILABLE entry with the reason beside the version serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

import slipway
from slipway.core.errors import (
    ConfigError,
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    SlipwayError,
    UnavailableError,
)
from slipway.experiments.spec import VARIANTS, Variant, parse_spec
from slipway.serving.batcher import ModelBatcher
from slipway.serving.experiment import (
    Assignment,
    Experiment,
    delete_dir,
    experiment_file,
    hide_version_dir,
    load_variants,
    read_experiment,
    remove_experiment,
    restore_version_dir,
    write_experiment,
)
from slipway.serving.explainer import Explainer
from slipway.serving.loader import LoadedModel, SessionOptions, check_model_control_mode, load_model_dir
from slipway.serving.payload_logger import PayloadLogger
from slipway.serving.repository_poll import DEFAULT_POLL_SECS, Fingerprint, RepositoryPoller, scan_repository
from slipway.serving.restricted import RestrictedGroups
from slipway.serving.stats import ModelStats, ServerMetrics, failure_reason
from slipway.serving.triton_repository import list_models, model_versions
from slipway.serving.validation import batch_size

log = logging.getLogger(__name__)
SERVER_NAME = "slipway"
UNLOADED = "unloaded"  # Triton's reason for a model unloaded through the model control API
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics", "model_repository"]
LOAD_UNLOAD = ("explicit model load / unload", "load, reload and unload models")
EXPERIMENTS = ("starting or stopping an A/B experiment", "start and stop A/B experiments")
_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


@dataclass(frozen=True)
class ServerOptions:
    """Limits of one server; every limit answers with a clear error, never a hang or a crash."""

    max_queue: int = 256
    timeout_s: float = 30.0
    max_body_bytes: int = 64 << 20
    shutdown_grace_s: float = 5.0
    logger_url: str | None = None  # KServe's payload logger sink (the drift monitor's /events); None: off
    # Triton's --http-restricted-api / --grpc-restricted-protocol (serving/restricted.py); empty: all open
    http_restricted: RestrictedGroups = field(default_factory=RestrictedGroups)
    grpc_restricted: RestrictedGroups = field(default_factory=RestrictedGroups)
    # `--require-digest`: refuse a model file without Slipway's metadata sidecar (its sha256 cannot be checked)
    require_digest: bool = False
    # Triton's --repository-poll-secs: how often model control mode poll rescans the repository (0: never)
    repository_poll_secs: float = DEFAULT_POLL_SECS
    # `--ort-spinning`: let ONNX Runtime's intra-op threads busy-wait between runs (off: see SessionOptions)
    ort_spinning: bool = False


def message_to_dict(message: Message) -> dict[str, Any]:
    """Protobuf to JSON the way Triton prints a model config: snake_case names, 64-bit ints as numbers."""
    out: dict[str, Any] = {}
    for fd, value in message.ListFields():
        out[fd.name] = _field_value(fd, value)
    return out


def _field_value(fd: FieldDescriptor, value: Any) -> Any:
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        value_fd = fd.message_type.fields_by_name["value"]
        return {k: _field_value(value_fd, v) for k, v in value.items()}
    if fd.label == FieldDescriptor.LABEL_REPEATED:
        return [_scalar(fd, v) for v in value]
    return _scalar(fd, value)


def _scalar(fd: FieldDescriptor, value: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return message_to_dict(value)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return fd.enum_type.values_by_number[value].name
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return value.decode("latin-1")
    if fd.type in _INT64_TYPES:
        return int(value)
    return value


def _check_load_parameters(name: str, parameters: Mapping[str, Any]) -> None:
    """Triton's load takes a `config` JSON and `file:<path>` overrides; here a load always reads the repository."""
    overrides = sorted(key for key in parameters if key == "config" or key.startswith("file:"))
    if overrides:
        raise InvalidInputError(
            f"load parameter(s) {', '.join(map(repr, overrides))} not supported by slipway serve: a load reads "
            f"config.pbtxt and the newest version directory of REPO/{name} on disk; write the new version there "
            "and load without overrides"
        )
    if parameters:
        raise InvalidInputError(
            f"unrecognized load parameter(s) {sorted(parameters)} (slipway serve takes none)"
        )


def _check_unload_parameters(parameters: Mapping[str, Any]) -> None:
    """`unload_dependents` is accepted (no model here has dependents: ensembles are not served); nothing else."""
    for key, value in parameters.items():
        if key != "unload_dependents":
            raise InvalidInputError(f"unrecognized unload parameter {key!r} (only unload_dependents)")
        if not isinstance(value, bool):
            raise InvalidInputError(f"unload parameter unload_dependents must be a boolean, got {value!r}")


class InferenceCore:
    """Loaded models with their batchers, statistics and metrics; one per running server.

    Named apart from KServe's InferenceService (the cluster object `slipway.cluster.kserve` builds).
    `repository` and `model_control_mode="explicit"` enable Triton's load/unload API; `"poll"` follows the
    repository instead (`repository_snapshot`: its scan from before the models were read; default: now);
    without a repository the core serves the models it was given and the index lists just those.
    """

    def __init__(
        self,
        models: dict[str, LoadedModel],
        options: ServerOptions | None = None,
        *,
        repository: str | Path | None = None,
        session_options: SessionOptions | None = None,
        model_control_mode: str = "none",
        experiments: Mapping[str, Experiment] | None = None,
        repository_snapshot: Mapping[str, Fingerprint] | None = None,
    ) -> None:
        check_model_control_mode(model_control_mode)
        if model_control_mode in ("explicit", "poll") and repository is None:
            raise ConfigError(
                f"model control mode {model_control_mode} needs the repository to load models from"
            )
        # Models split by an A/B experiment (resumed from the repository): served as variant A's by name.
        self.experiments: dict[str, Experiment] = dict(experiments or {})
        self.models = models
        for name, experiment in self.experiments.items():
            self.models[name] = experiment.models["a"]
        self.options = options or ServerOptions()
        self.repository = Path(repository) if repository is not None else None
        self.session_options = session_options or SessionOptions()
        self.model_control_mode = model_control_mode
        self.metrics = ServerMetrics(list(models))
        self.stats = {name: ModelStats(name, m.version) for name, m in models.items()}
        self.ready = False
        self.incoming = 0  # inference requests received but not yet queued (being read or decoded)
        # Every batcher still working, by id of its model (the served ones and old versions draining after a
        # reload): a request runs on the version it was validated against, and a served model's is found here.
        self._batcher_of: dict[int, ModelBatcher] = {}
        # A model not served -> (version, reason), for the index: unloaded, or its first load failed.
        self._unavailable: dict[str, tuple[str, str]] = {}
        self._control_locks: dict[str, asyncio.Lock] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.payload_logger: PayloadLogger | None = None
        # Mode poll: a served model whose reload failed -> (version tried, reason), for the index.
        self._reload_failures: dict[str, tuple[str, str]] = {}
        self._poller: RepositoryPoller | None = None
        self._poll_task: asyncio.Task[None] | None = None
        # Explanations (serving/explainer.py): the PyTorch checkpoints of served versions, loaded on first use.
        self.explainer = Explainer(self._is_served)
        # Mode poll with --repository-poll-secs 0 never rescans, as in Triton (load/unload stay refused).
        if (
            model_control_mode == "poll"
            and self.repository is not None
            and self.options.repository_poll_secs > 0
        ):
            self._poller = RepositoryPoller(
                self.repository,
                self.options.repository_poll_secs,
                scan_repository(self.repository) if repository_snapshot is None else repository_snapshot,
                load=self.load_from_repository,
                unload=self._unload_removed,
                frozen=self._poll_frozen,
            )

    def _start_batcher(self, model: LoadedModel, stats: ModelStats) -> ModelBatcher:
        batcher = ModelBatcher(model, stats, self.metrics, self.options.max_queue, lambda: self.incoming)
        batcher.start()
        self._batcher_of[id(model)] = batcher
        return batcher

    async def start(self) -> None:
        """Create the batchers on the running loop; the server reports ready only after this."""
        for name, model in self.models.items():
            self._start_batcher(model, self.stats[name])
        for name, experiment in self.experiments.items():
            for other in experiment.versions():
                if id(other) not in self._batcher_of:
                    self._start_batcher(other, ModelStats(name, other.version))
            self._watch_queues(name)
            log.info(
                "model splitting name=%s %s b_share=%s", name, experiment.describe(), experiment.spec.b_share
            )
            if self.model_control_mode != "explicit":
                log.warning(
                    "model %s: %s resumed from the repository; stopping it needs --model-control-mode explicit%s",
                    name,
                    experiment.describe(),
                    " (repository polling leaves this model as it is)" if self._poller is not None else "",
                )
        if self.options.logger_url:
            self.payload_logger = PayloadLogger(self.options.logger_url, self.metrics.registry)
            self.payload_logger.start()
        if self._poller is not None:
            self._poll_task = asyncio.create_task(self._poller.run(), name="repository-poll")
            log.info("polling model repository %s every %g s", self.repository, self._poller.interval_s)
        self.ready = True

    async def stop(self) -> None:
        """Stop reporting ready, let queued requests finish within the grace period, then stop workers."""
        self.ready = False
        self._stopping = True
        if self._poll_task is not None:  # no load starts once draining has begun
            self._poll_task.cancel()
            await asyncio.gather(self._poll_task, return_exceptions=True)
        grace = self.options.shutdown_grace_s
        await asyncio.gather(*(b.drain(grace) for b in list(self._batcher_of.values())))
        await asyncio.gather(*self._retiring, return_exceptions=True)
        if self.payload_logger is not None:
            await self.payload_logger.stop(grace)
        self.explainer.close()

    def model(self, name: str, version: str = "") -> LoadedModel:
        """A loaded model for metadata/config/ready calls; unknown -> NotFoundError (404 / NOT_FOUND)."""
        model = self.models.get(name)
        if model is None:
            unavailable = self._unavailable.get(name)
            if unavailable is None:
                raise NotFoundError(f"unknown model {name!r}; loaded models: {sorted(self.models)}")
            raise NotFoundError(
                f"model {name!r} is not loaded ({unavailable[1]}); loaded models: {sorted(self.models)}"
            )
        if version and version != model.version:
            experiment = self.experiments.get(name)
            other = experiment.model_of_version(version) if experiment is not None else None
            if other is None:
                loaded = ", ".join(m.version for m in self._served_versions(name))
                raise NotFoundError(f"model {name!r} version {version!r} is not loaded (loaded: {loaded})")
            return other
        return model

    def version_dir(self, model: LoadedModel) -> Path:
        """REPO/<model>/<version> of a loaded version: where its explain checkpoint and model card live."""
        if self.repository is None:
            raise NotFoundError(
                f"model {model.name!r}: this server has no model repository to read version folders from"
            )
        return self.repository / model.name / model.version

    def _is_served(self, model: LoadedModel) -> bool:
        """Whether this exact loaded version still answers requests (not swapped out by a reload or unloaded).
        Also called from the explain worker thread: single dict lookups only."""
        if self.models.get(model.name) is model:
            return True
        experiment = self.experiments.get(model.name)
        return experiment is not None and any(m is model for m in experiment.versions())

    def _served_versions(self, name: str) -> list[LoadedModel]:
        """The versions a served model answers with: both during an experiment, oldest first, else one."""
        experiment = self.experiments.get(name)
        return experiment.versions() if experiment is not None else [self.models[name]]

    def _stats_of(self, model: LoadedModel) -> ModelStats:
        batcher = self._batcher_of.get(id(model))
        if batcher is not None:
            return batcher.stats
        if self.models.get(model.name) is model:
            return self.stats[model.name]
        return ModelStats(model.name, model.version)  # not started yet: nothing counted

    def model_for_infer(self, name: str, version: str = "") -> LoadedModel:
        """Like `model`, but an inference request naming an unknown model is bad input (400 / INVALID_ARGUMENT)."""
        try:
            return self.model(name, version)
        except NotFoundError as err:
            raise InvalidInputError(str(err)) from None

    def experiment_for_infer(self, name: str, version: str = "") -> Experiment | None:
        """The experiment that assigns an inference request to a variant: the model's, when its path names no
        version (a request naming a version goes to that version, outside the split); else None."""
        return None if version else self.experiments.get(name)

    def record_assignment(self, assignment: Assignment, seconds: float, code: int) -> None:
        """Count one assigned request (answered or refused) for its variant: status counts and metrics."""
        experiment = assignment.experiment
        experiment.record(assignment.variant, code == 200)
        self.metrics.observe_experiment(
            experiment.spec.model, experiment.name, assignment.variant, seconds, code
        )

    async def infer(
        self,
        model: LoadedModel,
        arrays: dict[str, np.ndarray],
        timeout_s: float | None = None,
        request_id: str = "",
    ):
        """Run one validated request through the batcher of the version it was validated against; with a
        payload logger, queue the request and its outputs for it (after the answer is ready)."""
        start = time.perf_counter_ns()
        batcher = self._batcher_of.get(id(model))
        if batcher is None:  # only if a swap finished between validation and here; today nothing awaits there
            raise InvalidInputError(
                f"model {model.name!r} version {model.version} was unloaded; retry the request"
            )
        stats = batcher.stats
        rows = batch_size(model, arrays)
        timeout = self.options.timeout_s if timeout_s is None else min(timeout_s, self.options.timeout_s)
        try:
            outputs = await batcher.infer(arrays, rows, timeout)
        except (SlipwayError, asyncio.CancelledError) as err:
            stats.record_request(False, time.perf_counter_ns() - start, reason=failure_reason(err))
            raise
        stats.record_request(True, time.perf_counter_ns() - start, rows)
        if self.payload_logger is not None:
            self.payload_logger.log(request_id, model.name, model.version, arrays, outputs)
        return outputs

    def is_model_ready(self, name: str, version: str = "") -> bool:
        """Ready when served; a model of the repository that is not loaded is not ready; unknown -> 404."""
        if name not in self.models and self._in_repository(name):
            return False
        self.model(name, version)
        return self.ready

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": slipway.__version__, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        model = self.model(name, version)
        return {
            "name": model.name,
            "versions": [m.version for m in self._served_versions(name)],
            "platform": model.config.platform,
            "inputs": [
                {"name": t.name, "datatype": t.datatype, "shape": model.protocol_shape(t)}
                for t in model.inputs.values()
            ],
            "outputs": [
                {"name": t.name, "datatype": t.datatype, "shape": model.protocol_shape(t)}
                for t in model.outputs.values()
            ],
        }

    def model_config(self, name: str, version: str = "") -> dict[str, Any]:
        return message_to_dict(self.model(name, version).config)

    def statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        """Triton statistics extension: one model, or all when no name is given; one entry per served version
        (two during an experiment), or the named version's."""
        if name:
            self.model(name, version)
            models = [m for m in self._served_versions(name) if not version or m.version == version]
        else:
            models = [m for n in sorted(self.models) for m in self._served_versions(n)]
        return {"model_stats": [self._stats_of(m).as_dict() for m in models]}

    def served_stats(self) -> list[tuple[ModelStats, int]]:
        """Each served version's statistics (what `statistics()` reports) and its queued requests: Triton's
        metrics (`stats.TritonMetrics`) read these at scrape time."""
        served = [m for n in sorted(self.models) for m in self._served_versions(n)]
        batchers = [self._batcher_of.get(id(m)) for m in served]
        return [(self._stats_of(m), b.depth() if b else 0) for m, b in zip(served, batchers, strict=True)]

    def _in_repository(self, name: str) -> bool:
        return self.repository is not None and name in list_models(self.repository)

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Every model of the repository directory, as Triton lists it: a served model READY with its version, an
        unloaded one (or one whose load failed) UNAVAILABLE with the reason, one never loaded by name only."""
        names = set(self.models) | set(self._unavailable)
        if self.repository is not None:
            with contextlib.suppress(NotFoundError):
                names.update(list_models(self.repository))
        index: list[dict[str, str]] = []
        for name in sorted(names):
            entries: list[dict[str, str]]
            if name in self.models:
                state = "READY" if self.ready else "UNAVAILABLE"
                entries = [
                    {"name": name, "version": m.version, "state": state, "reason": ""}
                    for m in self._served_versions(name)
                ]
                if name in self._reload_failures:
                    version, reason = self._reload_failures[name]
                    entries.append(
                        {"name": name, "version": version, "state": "UNAVAILABLE", "reason": reason}
                    )
            elif name in self._unavailable:
                version, reason = self._unavailable[name]
                entries = [{"name": name, "version": version, "state": "UNAVAILABLE", "reason": reason}]
            else:
                entries = [{"name": name}]
            index += [e for e in entries if not ready_only or e.get("state") == "READY"]
        return index

    def require_model_control(self, action: tuple[str, str] = LOAD_UNLOAD) -> None:
        """Load and unload are refused unless the server runs in explicit mode, as Triton refuses them in modes
        none and poll: UNAVAILABLE (HTTP 503). Experiments (a Slipway extension that loads and drops versions)
        answer 400 there."""
        if self.model_control_mode == "explicit":
            return
        what, purpose = action
        message = (
            f"{what} is not allowed in model control mode "
            f"{self.model_control_mode!r}: start `slipway serve` with --model-control-mode explicit "
            f"(start_server(..., model_control_mode='explicit')) to {purpose}"
        )
        if self.model_control_mode == "poll":
            message += (
                "; in mode poll the server follows the repository: add, change or remove REPO/NAME and it is "
                "loaded, reloaded or unloaded within --repository-poll-secs"
            )
        raise (UnavailableError if action is LOAD_UNLOAD else InvalidInputError)(message)

    def _model_dir(self, name: str, failure: str) -> Path:
        """REPO/<name>, which must hold a config.pbtxt; else 400 naming the models there."""
        assert self.repository is not None  # explicit mode needs it (checked in __init__)
        available = list_models(self.repository)
        if name not in available:
            raise InvalidInputError(
                f"{failure}: no {name}/config.pbtxt in model repository {self.repository} "
                f"(models there: {available})"
            )
        return self.repository / name

    def _refuse_during_experiment(self, name: str, action: str) -> None:
        experiment = self.experiments.get(name)
        if experiment is not None:
            raise InvalidInputError(
                f"cannot {action} model {name!r}: it runs {experiment.describe()}; stop it first "
                f'(POST /v2/models/{name}/experiment/stop with {{"keep": "a"}} or {{"keep": "b"}})'
            )

    def _swap(self, name: str, model: LoadedModel, experiment: Experiment | None) -> list[ModelBatcher]:
        """Route `name` to `model` (with the experiment's other version, if any) from now on; returns the
        batchers no longer routed to, for the caller to retire. No await inside: atomic on the event loop."""
        self.metrics.add_model(name)
        routed = experiment.versions() if experiment is not None else [model]
        for new in routed:
            if id(new) not in self._batcher_of:  # a version already served keeps its batcher and statistics
                self._start_batcher(new, ModelStats(name, new.version))
        previous = self._served_versions(name) if name in self.models else []
        self.models[name], self.stats[name] = model, self._batcher_of[id(model)].stats
        if experiment is not None:
            self.experiments[name] = experiment
        else:
            self.experiments.pop(name, None)
        self._unavailable.pop(name, None)
        self._reload_failures.pop(name, None)
        self._watch_queues(name)
        self.explainer.release_unserved()
        kept = {id(m) for m in routed}
        return [self._batcher_of[id(m)] for m in previous if id(m) not in kept]

    def _watch_queues(self, name: str) -> None:
        """slipway_queue_depth of a model is the sum over the versions it is served by."""
        batchers = [self._batcher_of[id(m)] for m in self._served_versions(name)]
        if len(batchers) == 1:
            self.metrics.watch_queue(name, batchers[0].depth)
        else:
            self.metrics.watch_queue(name, lambda: sum(b.depth() for b in batchers))

    async def _retire_all(self, batchers: Sequence[ModelBatcher]) -> None:
        await asyncio.gather(*(self._retire(batcher) for batcher in batchers))

    def _lock(self, name: str) -> asyncio.Lock:
        return self._control_locks.setdefault(name, asyncio.Lock())

    async def load_model(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        """Triton's load API (explicit mode): `load_from_repository` after checking the mode and parameters."""
        self.require_model_control()
        _check_load_parameters(name, parameters or {})
        await self.load_from_repository(name)

    async def load_from_repository(self, name: str) -> None:
        """Load (or reload) the version of REPO/<name> its config selects; a failure leaves the served version
        serving (the load API and the repository poller both call this).

        The blocking part (verify, ORT sessions) runs in a thread so serving goes on; loads and unloads of one
        model are serialized. Returns once the new version serves and the old one has drained.
        """
        model_dir = self._model_dir(name, f"failed to load model {name!r}")
        async with self._lock(name):
            self._refuse_during_experiment(name, "load")
            served = self.models.get(name)

            def load() -> tuple[LoadedModel, Experiment | None]:
                """The newest version; or, when REPO/<name>/experiment.json is there, its two versions."""
                spec = read_experiment(model_dir)
                if spec is None:
                    return load_model_dir(model_dir, self.session_options), None
                where = f"{experiment_file(model_dir)}: experiment"
                experiment = Experiment(
                    spec, load_variants(model_dir, spec, self.session_options, where=where)
                )
                return experiment.models["a"], experiment

            try:
                model, experiment = await asyncio.to_thread(load)
            except Exception as err:
                if not isinstance(err, SlipwayError):
                    log.exception("model load failed name=%s", name)
                reason = str(err) if isinstance(err, SlipwayError) else f"{type(err).__name__}: {err}"
                keeps = f"; version {served.version} keeps serving" if served is not None else ""
                if served is None:
                    self._unavailable[name] = (self._newest_version(model_dir), reason)
                elif self._poller is not None:  # no caller to answer: the index shows it
                    self._reload_failures[name] = (self._newest_version(model_dir), reason + keeps)
                log.warning("model load refused name=%s reason=%s%s", name, reason, keeps)
                raise InvalidInputError(f"failed to load model {name!r}: {reason}{keeps}") from None
            if self._stopping:
                raise OverloadedError(f"model {name!r} not loaded: the server is shutting down")
            # The swap: new batchers started first, then no await, so a request sees one version or the other.
            retired = self._swap(name, model, experiment)
            previous = f" (was {served.version})" if served is not None else ""
            if experiment is not None:
                log.info("model splitting name=%s %s%s (resumed)", name, experiment.describe(), previous)
            else:
                log.info("model serving name=%s version=%s%s", name, model.version, previous)
            await self._retire_all(retired)

    async def unload_model(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        """Triton's unload API (explicit mode): `unload_from_repository` after checking the mode and parameters."""
        self.require_model_control()
        _check_unload_parameters(parameters or {})
        await self.unload_from_repository(name)

    async def unload_from_repository(self, name: str) -> None:
        """Stop routing to the model, let its queue drain, forget it; unloading an unloaded model is a no-op."""
        never_served = InvalidInputError(
            f"failed to unload model {name!r}: it has not been served (loaded models: {sorted(self.models)})"
        )
        if name not in self.models and name not in self._unavailable:
            raise never_served
        async with self._lock(name):
            self._refuse_during_experiment(name, "unload")
            model = self.models.pop(name, None)
            if model is None:
                if self._unavailable.get(name, ("", ""))[1] == UNLOADED:
                    return  # already unloaded: nothing to do
                raise never_served
            batcher = self._batcher_of[id(model)]
            del self.stats[name]
            self._unavailable[name] = (model.version, UNLOADED)
            self._reload_failures.pop(name, None)
            self.metrics.unwatch_queue(name)
            self.explainer.release_unserved()
            log.info("model unloading name=%s version=%s", name, model.version)
            await self._retire(batcher)

    async def start_experiment(self, name: str, data: Any) -> dict[str, Any]:
        """Split `name` between versions A and B of the spec: both loaded off the loop (a served version of the
        same number is reused), the spec persisted in REPO/<name>/experiment.json, then one atomic switch;
        the version served before, if neither A nor B, drains. Returns the experiment's status."""
        self.require_model_control(EXPERIMENTS)
        spec = parse_spec(data)  # ConfigError (400) naming the field
        if spec.model != name:
            raise InvalidInputError(
                f"experiment.model: {spec.model!r} differs from the model in the path, {name!r}"
            )
        failure = f"failed to start experiment {spec.name!r} on model {name!r}"
        model_dir = self._model_dir(name, failure)
        async with self._lock(name):
            running = self.experiments.get(name)
            if running is not None:
                raise InvalidInputError(
                    f"model {name!r} already runs {running.describe()}: one experiment per model; stop it "
                    f"first (POST /v2/models/{name}/experiment/stop)"
                )
            if not spec.started_at:
                spec = spec.model_copy(update={"started_at": time.time()})
            served = self.models.get(name)
            reuse = [served] if served is not None else []
            try:
                models = await asyncio.to_thread(load_variants, model_dir, spec, self.session_options, reuse)
            except Exception as err:
                if not isinstance(err, SlipwayError):
                    log.exception("experiment load failed name=%s model=%s", spec.name, name)
                reason = str(err) if isinstance(err, SlipwayError) else f"{type(err).__name__}: {err}"
                keeps = f"; version {served.version} keeps serving" if served is not None else ""
                log.warning("experiment refused name=%s model=%s reason=%s%s", spec.name, name, reason, keeps)
                raise InvalidInputError(f"{failure}: {reason}{keeps}") from None
            if self._stopping:
                raise OverloadedError(f"{failure}: the server is shutting down")
            await asyncio.to_thread(write_experiment, model_dir, spec)
            experiment = Experiment(spec, models)
            retired = self._swap(name, models["a"], experiment)
            previous = f" (was {served.version})" if served is not None else ""
            log.info(
                "experiment started name=%s model=%s a=%s b=%s b_share=%s%s",
                spec.name,
                name,
                spec.a,
                spec.b,
                spec.b_share,
                previous,
            )
            await self._retire_all(retired)
            return experiment.status()

    def _running_experiment(self, name: str) -> Experiment:
        experiment = self.experiments.get(name)
        if experiment is None:
            self.model(name)  # an unknown model: 404 naming the loaded ones
            raise NotFoundError(
                f"model {name!r} runs no experiment; start one with POST /v2/models/{name}/experiment"
            )
        return experiment

    def experiment_status(self, name: str) -> dict[str, Any]:
        """The running experiment of `name`: spec and per-variant version and counts; none -> 404."""
        return self._running_experiment(name).status()

    async def stop_experiment(self, name: str, keep: Any) -> dict[str, Any]:
        """End the experiment: the kept variant's version serves alone, the other drains (no request fails),
        experiment.json goes; a losing version folder newer than the winner's is deleted from the repository,
        so that a reload or restart (which take the newest version) keeps serving the winner."""
        self.require_model_control(EXPERIMENTS)
        if not isinstance(keep, str) or keep not in VARIANTS:
            raise InvalidInputError(f"keep: expected 'a' or 'b', got {keep!r:.60}")
        kept_variant: Variant = "a" if keep == "a" else "b"
        async with self._lock(name):
            experiment = self._running_experiment(name)
            assert self.repository is not None  # explicit mode needs it (checked in __init__)
            model_dir = self.repository / name
            lost_variant: Variant = "b" if kept_variant == "a" else "a"
            kept, lost = experiment.models[kept_variant], experiment.models[lost_variant]
            hidden = None
            if int(lost.version) > int(kept.version) and (model_dir / lost.version).is_dir():
                hidden = await asyncio.to_thread(hide_version_dir, model_dir, lost.version)
            try:
                await asyncio.to_thread(remove_experiment, model_dir)
            except SlipwayError:
                if hidden is not None:
                    restore_version_dir(hidden, model_dir, lost.version)
                raise
            retired = self._swap(name, kept, None)
            deleted = str(model_dir / lost.version) if hidden is not None else None
            log.info(
                "experiment stopped name=%s model=%s kept=%s version=%s retired_version=%s deleted=%s",
                experiment.name,
                name,
                kept_variant,
                kept.version,
                lost.version,
                deleted or "-",
            )
            await self._retire_all(retired)
            if hidden is not None:
                await asyncio.to_thread(delete_dir, hidden)
            status = experiment.status()
            return {
                **status,
                "kept": {"variant": kept_variant, "version": kept.version},
                "retired": {"variant": lost_variant, "version": lost.version},
                "deleted_version_dir": deleted,
            }

    async def _unload_removed(self, name: str) -> None:
        """Mode poll, REPO/<name> gone: a served model is unloaded (the index lists it `unloaded`, as after an
        unload); one whose load had failed is forgotten with its folder."""
        if name in self.models:
            await self.unload_from_repository(name)
        else:
            self._unavailable.pop(name, None)

    def _poll_frozen(self, name: str) -> str | None:
        """Why repository polling leaves a model as it is: an A/B experiment splits it (stopping one needs
        explicit mode, and a reload would end the split)."""
        experiment = self.experiments.get(name)
        if experiment is None:
            return None
        return (
            f"it runs {experiment.describe()}; changes to its folder are not applied until the experiment is "
            "stopped (restart in --model-control-mode explicit to stop it)"
        )

    async def _retire(self, batcher: ModelBatcher) -> None:
        """Drain a batcher no longer routed to; shielded, so a caller that gives up cannot cut the drain short."""

        async def drain() -> None:
            try:
                await batcher.drain(self.options.timeout_s)  # every queued request ends within its timeout
            finally:
                self._batcher_of.pop(id(batcher.model), None)

        task = asyncio.ensure_future(drain())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        await asyncio.shield(task)

    @staticmethod
    def _newest_version(model_dir: Path) -> str:
        with contextlib.suppress(OSError, ValueError):
            versions = model_versions(model_dir)
            return str(versions[-1]) if versions else ""
        return ""

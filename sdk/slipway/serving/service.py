"""The protocol-independent core both front ends call: model lookup, inference, metadata, config, statistics.

HTTP and gRPC run on one event loop and share these batchers, so requests from both protocols batch together
and the queue limit covers the whole server.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

import slipway
from slipway.core.errors import InvalidInputError, NotFoundError, SlipwayError
from slipway.serving.batcher import ModelBatcher
from slipway.serving.loader import LoadedModel
from slipway.serving.stats import ModelStats, ServerMetrics
from slipway.serving.validation import batch_size

SERVER_NAME = "slipway"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics", "model_repository"]
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


class InferenceCore:
    """Loaded models with their batchers, statistics and metrics; one per running server.

    Named apart from KServe's InferenceService (the cluster object `slipway.cluster.kserve` builds).
    """

    def __init__(self, models: dict[str, LoadedModel], options: ServerOptions | None = None) -> None:
        self.models = models
        self.options = options or ServerOptions()
        self.metrics = ServerMetrics(list(models))
        self.stats = {name: ModelStats(name, m.version) for name, m in models.items()}
        self.batchers: dict[str, ModelBatcher] = {}
        self.ready = False
        self.incoming = 0  # inference requests received but not yet queued (being read or decoded)

    async def start(self) -> None:
        """Create the batchers on the running loop; the server reports ready only after this."""
        for name, model in self.models.items():
            batcher = ModelBatcher(
                model, self.stats[name], self.metrics, self.options.max_queue, lambda: self.incoming
            )
            batcher.start()
            self.batchers[name] = batcher
        self.ready = True

    async def stop(self) -> None:
        """Stop reporting ready, let queued requests finish within the grace period, then stop workers."""
        self.ready = False
        await asyncio.gather(*(b.drain(self.options.shutdown_grace_s) for b in self.batchers.values()))

    def model(self, name: str, version: str = "") -> LoadedModel:
        """A loaded model for metadata/config/ready calls; unknown -> NotFoundError (404 / NOT_FOUND)."""
        model = self.models.get(name)
        if model is None:
            raise NotFoundError(f"unknown model {name!r}; loaded models: {sorted(self.models)}")
        if version and version != model.version:
            raise NotFoundError(f"model {name!r} version {version!r} is not loaded (loaded: {model.version})")
        return model

    def model_for_infer(self, name: str, version: str = "") -> LoadedModel:
        """Like `model`, but an inference request naming an unknown model is bad input (400 / INVALID_ARGUMENT)."""
        try:
            return self.model(name, version)
        except NotFoundError as err:
            raise InvalidInputError(str(err)) from None

    async def infer(self, model: LoadedModel, arrays: dict[str, np.ndarray], timeout_s: float | None = None):
        """Run one validated request through the model's batcher; returns every output by name."""
        start = time.perf_counter_ns()
        stats = self.stats[model.name]
        rows = batch_size(model, arrays)
        timeout = self.options.timeout_s if timeout_s is None else min(timeout_s, self.options.timeout_s)
        try:
            outputs = await self.batchers[model.name].infer(arrays, rows, timeout)
        except SlipwayError:
            stats.record_request(False, time.perf_counter_ns() - start)
            raise
        stats.record_request(True, time.perf_counter_ns() - start, rows)
        return outputs

    def is_model_ready(self, name: str, version: str = "") -> bool:
        self.model(name, version)
        return self.ready

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": slipway.__version__, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        model = self.model(name, version)
        return {
            "name": model.name,
            "versions": [model.version],
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
        """Triton statistics extension: one model, or all when no name is given."""
        if name:
            self.model(name, version)
            return {"model_stats": [self.stats[name].as_dict()]}
        return {"model_stats": [self.stats[n].as_dict() for n in sorted(self.stats)]}

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        state = "READY" if self.ready else "UNAVAILABLE"
        if ready_only and not self.ready:
            return []
        return [
            {"name": m.name, "version": m.version, "state": state, "reason": ""} for m in self.models.values()
        ]

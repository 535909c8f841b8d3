"""The v2 gRPC protocol through Triton's own generated servicer (tritonclient ships it), on grpc.aio.

Using Triton's service definition keeps kserve (whose protos clash with tritonclient's) out of this process and
gives the Triton-only RPCs (ModelConfig, ModelStatistics, RepositoryIndex, RepositoryModelLoad/Unload) for free.
ModelInfer honours A/B experiments (a variant per request, named in the response's parameters); starting and
stopping one is HTTP only (a Slipway extension with no RPC in Triton's service).

`--grpc-restricted-protocol` (serving/restricted.py) is enforced per method by a server interceptor, installed
only when some group is restricted: a method of a restricted group without metadata `triton-grpc-protocol-KEY`
= VALUE is refused with UNAVAILABLE and Triton's message before its request is even decoded. The standard
health service belongs to `health`, as in Triton; reflection belongs to no group and stays open.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from slipway.core.errors import InvalidInputError, SlipwayError
from slipway.serving.datatypes import NUMPY_TO_V2
from slipway.serving.experiment import KEY_PARAMETER, Assignment
from slipway.serving.restricted import RestrictedGroups, Restriction
from slipway.serving.service import InferenceCore
from slipway.serving.validation import RequestTensor, check_outputs, decode_inputs

log = logging.getLogger(__name__)

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
INFERENCE_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# Triton's restricted-protocol group of every RPC (grpc_server.cc registers each handler with its group).
_INFERENCE_GROUPS = {
    "ServerLive": "health",
    "ServerReady": "health",
    "ModelReady": "health",
    "ServerMetadata": "metadata",
    "ModelMetadata": "metadata",
    "ModelInfer": "inference",
    "ModelStreamInfer": "inference",
    "ModelConfig": "model-config",
    "ModelStatistics": "statistics",
    "RepositoryIndex": "model-repository",
    "RepositoryModelLoad": "model-repository",
    "RepositoryModelUnload": "model-repository",
    "SystemSharedMemoryStatus": "shared-memory",
    "SystemSharedMemoryRegister": "shared-memory",
    "SystemSharedMemoryUnregister": "shared-memory",
    "CudaSharedMemoryStatus": "shared-memory",
    "CudaSharedMemoryRegister": "shared-memory",
    "CudaSharedMemoryUnregister": "shared-memory",
    "TraceSetting": "trace",
    "LogSettings": "logging",
}
METHOD_GROUPS = {f"/{INFERENCE_SERVICE_NAME}/{name}": group for name, group in _INFERENCE_GROUPS.items()} | {
    f"/{HEALTH_SERVICE_NAME}/Check": "health",
    f"/{HEALTH_SERVICE_NAME}/Watch": "health",
}
# Typed `contents` field for each v2 datatype (FP16 travels only as raw bytes).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def grpc_status(err: SlipwayError) -> grpc.StatusCode:
    return STATUS_CODES.get(err.http_status, grpc.StatusCode.INTERNAL)


def _request_tensors(request: pb.ModelInferRequest) -> list[RequestTensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; send one per input"
        )
    tensors = []
    for i, tensor in enumerate(request.inputs):
        data: Any
        if raw:
            data = raw[i]
        else:
            field = CONTENTS_FIELDS.get(tensor.datatype)
            if field is None:
                raise InvalidInputError(
                    f"input {tensor.name!r}: datatype {tensor.datatype!r} needs raw_input_contents"
                )
            data = np.asarray(getattr(tensor.contents, field))
        tensors.append(RequestTensor(tensor.name, tensor.datatype, list(tensor.shape), data))
    return tensors


def _repository_parameters(parameters: Any) -> dict[str, Any]:
    """ModelRepositoryParameter map -> plain values (whichever of bool/int64/string/bytes is set)."""
    values: dict[str, Any] = {}
    for key, param in parameters.items():
        choice = param.WhichOneof("parameter_choice")
        values[key] = getattr(param, choice) if choice else None
    return values


def _check_repository_name(name: str) -> None:
    if name:
        raise InvalidInputError(
            f"repository_name {name!r} is not supported: slipway serve has one repository; leave it empty"
        )


def _experiment_key(request: pb.ModelInferRequest) -> str | None:
    """The sticky assignment key: the `experiment_key` string parameter, else the request id."""
    if KEY_PARAMETER in request.parameters:
        param = request.parameters[KEY_PARAMETER]
        if param.WhichOneof("parameter_choice") != "string_param" or not param.string_param:
            raise InvalidInputError(f"parameter {KEY_PARAMETER} must be a non-empty string_param")
        return str(param.string_param)
    return request.id or None


class SlipwayServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Triton's GRPCInferenceService backed by an InferenceCore; unsupported RPCs stay UNIMPLEMENTED."""

    def __init__(self, service: InferenceCore) -> None:
        self.service = service

    async def _abort(self, context: grpc.aio.ServicerContext, err: SlipwayError) -> None:
        await context.abort(grpc_status(err), str(err))

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            return pb.ModelReadyResponse(ready=self.service.is_model_ready(request.name, request.version))
        except SlipwayError as err:
            await self._abort(context, err)
            raise

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.service.server_metadata())

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        try:
            meta = self.service.model_metadata(request.name, request.version)
        except SlipwayError as err:
            await self._abort(context, err)
            raise
        return json_format.ParseDict(meta, pb.ModelMetadataResponse())

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        try:
            model = self.service.model(request.name, request.version)
        except SlipwayError as err:
            await self._abort(context, err)
            raise
        return pb.ModelConfigResponse(config=model.config)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        try:
            stats = self.service.statistics(request.name, request.version)
        except SlipwayError as err:
            await self._abort(context, err)
            raise
        return json_format.ParseDict(stats, pb.ModelStatisticsResponse())

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        index = self.service.repository_index(request.ready)
        return json_format.ParseDict({"models": index}, pb.RepositoryIndexResponse())

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        try:
            self.service.require_model_control()
            _check_repository_name(request.repository_name)
            await self.service.load_model(request.model_name, _repository_parameters(request.parameters))
        except SlipwayError as err:
            await self._abort(context, err)
            raise
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        try:
            self.service.require_model_control()
            _check_repository_name(request.repository_name)
            await self.service.unload_model(request.model_name, _repository_parameters(request.parameters))
        except SlipwayError as err:
            await self._abort(context, err)
            raise
        return pb.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        started = time.perf_counter()
        status = 500
        assignment: Assignment | None = None
        try:
            model = self.service.model_for_infer(request.model_name, request.model_version)
            experiment = self.service.experiment_for_infer(request.model_name, request.model_version)
            if experiment is not None:  # an A/B split: the variant answers (validation included)
                assignment = experiment.assign(_experiment_key(request))
                model = assignment.model
            arrays = decode_inputs(model, _request_tensors(request))
            names = check_outputs(model, [o.name for o in request.outputs])
            timeout_s = None
            if "timeout" in request.parameters:
                timeout_us = request.parameters["timeout"].int64_param
                if timeout_us <= 0:
                    raise InvalidInputError("parameter timeout must be a positive int64 of microseconds")
                timeout_s = timeout_us / 1e6
            results = await self.service.infer(model, arrays, timeout_s, request.id)
            response = pb.ModelInferResponse(
                model_name=model.name, model_version=model.version, id=request.id
            )
            if assignment is not None:
                for key, value in assignment.parameters().items():
                    response.parameters[key].string_param = value
            for name in names:
                arr = results[name]
                response.outputs.add(name=name, datatype=NUMPY_TO_V2[arr.dtype.name], shape=arr.shape)
                response.raw_output_contents.append(np.ascontiguousarray(arr).tobytes())
            status = 200
            return response
        except SlipwayError as err:
            status = err.http_status
            await self._abort(context, err)
            raise
        except Exception:
            log.exception("unhandled error in ModelInfer model=%s", request.model_name)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error; see the server log")
            raise
        finally:
            seconds = time.perf_counter() - started
            self.service.metrics.observe_request(request.model_name, "grpc", seconds, status)
            if assignment is not None:
                self.service.record_assignment(assignment, seconds, status)


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class RestrictionInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a call to a restricted method unless its metadata carries the group's key and value."""

    def __init__(self, restricted: RestrictedGroups) -> None:
        self._by_method: dict[str, Restriction] = {}
        for method, group in METHOD_GROUPS.items():
            restriction = restricted.restriction(group)
            if restriction is not None:
                self._by_method[method] = restriction

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        restriction = self._by_method.get(details.method)
        if handler is None or restriction is None:
            return handler
        sent = next((v for k, v in details.invocation_metadata or () if k == restriction.header), None)
        if restriction.admits(sent if isinstance(sent, str) else None):
            return handler
        return _refusal(handler, restriction.grpc_message)


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind that aborts with Triton's status; the request stays undecoded."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAVAILABLE, message)

    if handler.request_streaming and handler.response_streaming:
        make = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        make = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        make = grpc.unary_stream_rpc_method_handler
    else:
        make = grpc.unary_unary_rpc_method_handler
    return make(refuse, request_deserializer=None, response_serializer=handler.response_serializer)


async def build_grpc_server(
    service: InferenceCore, max_message_bytes: int
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """A grpc.aio server on the running loop, messages capped like HTTP bodies.

    Beside the inference service it serves the standard `grpc.health.v1.Health` (what Kubernetes gRPC probes and
    grpc_health_probe ask, as Triton answers it) and server reflection (so grpcurl needs no .proto files). The
    caller marks health NOT_SERVING on shutdown through the returned servicer. Restricted groups
    (`--grpc-restricted-protocol`) are checked by a `RestrictionInterceptor`, absent when none is set.
    """
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    restricted = service.options.grpc_restricted
    interceptors = [RestrictionInterceptor(restricted)] if restricted else None
    server = grpc.aio.server(options=options, interceptors=interceptors)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(SlipwayServicer(service), server)
    health_servicer = health.aio.HealthServicer()  # the overall server ("") starts SERVING
    await health_servicer.set(INFERENCE_SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (INFERENCE_SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server, health_servicer

"""Open Inference Protocol v2 over HTTP on Starlette, with Triton's binary tensor extension and extensions.

Binary inputs are numpy views over the request body (`frombuffer`); binary outputs are written with `tobytes`,
so no tensor is converted element by element. Every error is JSON `{"error": msg}` with the status of its
`SlipwayError` class; anything unexpected is a logged 500 that never takes the server down.

`/v2/models/{m}/experiment[/stop]` are a Slipway extension (A/B experiments; no Triton or KServe equivalent), and
so are `/v2/models/{m}/explain` (with KServe's explainer path `/v1/models/{m}:explain`) and `/v2/models/{m}/card`
(serving/explainer.py).

Each route belongs to one of Triton's restricted-API groups (`--http-restricted-api`, serving/restricted.py): a
restricted group answers 403 unless the request carries its header, before the body is read. The experiment
routes belong to `model-repository` (they load and swap versions), explain to `inference` (it runs the model), the
card to `metadata`; `/metrics` belongs to none and stays open, as Triton's metrics port does.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from slipway.core.errors import InvalidInputError, SlipwayError
from slipway.serving.datatypes import NUMPY_TO_V2
from slipway.serving.experiment import KEY_HEADER, KEY_PARAMETER, Assignment
from slipway.serving.explainer import (
    ATTRIBUTIONS,
    TARGET,
    default_target,
    explained_input,
    parse_parameters,
    read_card,
)
from slipway.serving.http_body import HEADER_LENGTH, json_header_size, read_limited_body
from slipway.serving.loader import LoadedModel
from slipway.serving.restricted import Restriction
from slipway.serving.service import EXPERIMENTS, InferenceCore
from slipway.serving.validation import RequestTensor, check_outputs, decode_inputs

log = logging.getLogger(__name__)
JSON_TYPE = "application/json"


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")).encode(), status, media_type=JSON_TYPE)


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def _parse_json(raw: bytes | memoryview) -> Any:
    try:
        return json.loads(bytes(raw))
    except (ValueError, RecursionError) as err:
        raise InvalidInputError(f"request header is not valid JSON: {err}") from None


def _params(obj: dict[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInputError(f"{where}: 'parameters' must be an object")
    return params


def _split_request(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    """Separate the JSON header from the binary section (Triton's binary tensor data extension)."""
    view = memoryview(body)
    if header_length is None:
        header, binary = view, view[len(view) :]
    else:
        n = json_header_size(header_length, len(body))
        header, binary = view[:n], view[n:]
    request = _parse_json(header)
    if not isinstance(request, dict):
        raise InvalidInputError("inference request must be a JSON object")
    return request, binary


def _request_tensors(request: dict[str, Any], binary: memoryview) -> list[RequestTensor]:
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError("inference request needs a non-empty 'inputs' list")
    tensors: list[RequestTensor] = []
    offset = 0
    for i, item in enumerate(inputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInputError(f"inputs[{i}] must be an object with a string 'name'")
        name = item["name"]
        datatype = item.get("datatype")
        if not isinstance(datatype, str):
            raise InvalidInputError(f"input {name!r}: 'datatype' must be a string such as FP32")
        size = _params(item, f"input {name!r}").get("binary_data_size")
        data: Any
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise InvalidInputError(
                    f"input {name!r}: binary_data_size {size!r} exceeds the {len(binary) - offset} binary bytes left"
                )
            data = binary[offset : offset + size]
            offset += size
        else:
            data = item.get("data")
            if not isinstance(data, list):
                raise InvalidInputError(f"input {name!r}: 'data' must be a list (or use binary_data_size)")
        tensors.append(RequestTensor(name, datatype, item.get("shape"), data))  # type: ignore[arg-type]
    if offset != len(binary):
        raise InvalidInputError(
            f"{len(binary) - offset} binary bytes after the JSON header belong to no input"
        )
    return tensors


def _requested_outputs(model: LoadedModel, request: dict[str, Any]) -> tuple[list[str], set[str]]:
    """Names to return and which of them go binary (per output, or all via binary_data_output)."""
    all_binary = bool(_params(request, "request").get("binary_data_output", False))
    outputs = request.get("outputs") or []
    if not isinstance(outputs, list):
        raise InvalidInputError("'outputs' must be a list")
    names: list[str] = []
    binary: set[str] = set()
    for i, item in enumerate(outputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInputError(f"outputs[{i}] must be an object with a string 'name'")
        params = _params(item, f"output {item['name']!r}")
        if params.get("classification"):
            raise InvalidInputError("the classification extension is not supported; request raw outputs")
        names.append(item["name"])
        if params.get("binary_data", all_binary):
            binary.add(item["name"])
    names = check_outputs(model, names)
    if not outputs and all_binary:
        binary = set(names)
    return names, binary


def _timeout_s(request: dict[str, Any]) -> float | None:
    """Triton's per-request `timeout` parameter, in microseconds."""
    timeout_us = _params(request, "request").get("timeout")
    if timeout_us is None:
        return None
    if not isinstance(timeout_us, int) or isinstance(timeout_us, bool) or timeout_us <= 0:
        raise InvalidInputError(
            f"parameter timeout must be a positive integer of microseconds, got {timeout_us!r}"
        )
    return timeout_us / 1e6


def _experiment_key(request: dict[str, Any], headers: Mapping[str, str]) -> str | None:
    """The sticky assignment key: the `experiment_key` parameter, else the header, else the request id."""
    key = _params(request, "request").get(KEY_PARAMETER)
    if key is not None:
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"parameter {KEY_PARAMETER} must be a non-empty string, got {key!r:.60}")
        return key
    header = headers.get(KEY_HEADER)
    if header:
        return header
    request_id = request.get("id")
    return request_id if isinstance(request_id, str) and request_id else None


def _infer_response(
    model: LoadedModel,
    request: dict[str, Any],
    names: list[str],
    binary: set[str],
    results: dict[str, np.ndarray],
    assignment: Assignment | None = None,
    parameters: dict[str, Any] | None = None,
) -> Response:
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in names:
        arr = results[name]
        entry: dict[str, Any] = {
            "name": name,
            "datatype": NUMPY_TO_V2[arr.dtype.name],
            "shape": list(arr.shape),
        }
        if name in binary:
            blob = np.ascontiguousarray(arr).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = arr.reshape(-1).tolist()
        outputs.append(entry)
    payload: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "outputs": outputs}
    if assignment is not None:
        payload["parameters"] = assignment.parameters()
    if parameters:
        payload["parameters"] = {**payload.get("parameters", {}), **parameters}
    if isinstance(request.get("id"), str):
        payload["id"] = request["id"]
    header = json.dumps(payload, separators=(",", ":")).encode()
    if not blobs:
        return Response(header, 200, media_type=JSON_TYPE)
    return Response(
        b"".join([header, *blobs]),
        200,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


Handler = Callable[[Request], Awaitable[Response]]


def build_app(service: InferenceCore) -> Starlette:
    """The ASGI app; routes follow the v2 protocol and Triton's extensions (see docs/serving.md)."""
    metrics = service.metrics
    limit = service.options.max_body_bytes
    restricted = service.options.http_restricted

    def guarded(handler: Handler, group: str | None) -> Handler:
        """Errors as JSON with their status; a restricted `group` first checks its header (Triton: 403)."""
        restriction: Restriction | None = restricted.restriction(group) if group else None

        async def wrapper(request: Request) -> Response:
            if restriction is not None and not restriction.admits(request.headers.get(restriction.header)):
                return _error(403, restriction.http_message)
            try:
                return await handler(request)
            except SlipwayError as err:
                return _error(err.http_status, str(err))
            except Exception:
                log.exception("unhandled error path=%s", request.url.path)
                return _error(500, "internal server error; see the server log")

        return wrapper

    def version(request: Request) -> str:
        return str(request.path_params.get("version", ""))

    async def live(request: Request) -> Response:
        return Response(b"", 200)

    async def ready(request: Request) -> Response:
        return Response(b"", 200 if service.ready else 503)

    async def server_metadata(request: Request) -> Response:
        return _json(service.server_metadata())

    async def model_metadata(request: Request) -> Response:
        return _json(service.model_metadata(request.path_params["model"], version(request)))

    async def model_ready(request: Request) -> Response:
        ok = service.is_model_ready(request.path_params["model"], version(request))
        return Response(b"", 200 if ok else 503)

    async def model_config(request: Request) -> Response:
        return _json(service.model_config(request.path_params["model"], version(request)))

    async def model_stats(request: Request) -> Response:
        return _json(service.statistics(request.path_params.get("model", ""), version(request)))

    async def repository_index(request: Request) -> Response:
        body = await read_limited_body(request, limit)
        ready_only = False
        if body.strip():
            parsed = _parse_json(body)
            ready_only = bool(parsed.get("ready", False)) if isinstance(parsed, dict) else False
        return _json(service.repository_index(ready_only))

    async def control_parameters(request: Request) -> dict[str, Any]:
        """The optional `{"parameters": {...}}` body of a load or unload request."""
        body = await read_limited_body(request, limit)
        if not body.strip():
            return {}
        parsed = _parse_json(body)
        if not isinstance(parsed, dict):
            raise InvalidInputError('a load/unload body must be a JSON object such as {"parameters": {}}')
        unknown = sorted(set(parsed) - {"parameters"})
        if unknown:
            raise InvalidInputError(f"unrecognized field(s) {unknown} in the request (only 'parameters')")
        return _params(parsed, "request")

    async def load_model(request: Request) -> Response:
        service.require_model_control()
        await service.load_model(request.path_params["model"], await control_parameters(request))
        return Response(b"", 200)

    async def unload_model(request: Request) -> Response:
        service.require_model_control()
        await service.unload_model(request.path_params["model"], await control_parameters(request))
        return Response(b"", 200)

    async def json_body(request: Request, what: str) -> Any:
        body = await read_limited_body(request, limit)
        if not body.strip():
            raise InvalidInputError(f"{what}: the request body must be a JSON object")
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as err:
            raise InvalidInputError(f"{what}: the request body is not valid JSON: {err}") from None

    async def start_experiment(request: Request) -> Response:
        service.require_model_control(EXPERIMENTS)
        spec = await json_body(request, "experiment")
        return _json(await service.start_experiment(request.path_params["model"], spec))

    async def experiment_status(request: Request) -> Response:
        return _json(service.experiment_status(request.path_params["model"]))

    async def stop_experiment(request: Request) -> Response:
        service.require_model_control(EXPERIMENTS)
        body = await json_body(request, "stop")
        if not isinstance(body, dict):
            raise InvalidInputError('stop: the body must be a JSON object such as {"keep": "a"}')
        unknown = sorted(set(body) - {"keep"})
        if unknown:
            raise InvalidInputError(f"stop: unrecognized field(s) {unknown} (only 'keep')")
        if "keep" not in body:
            raise InvalidInputError("keep: required, 'a' or 'b' (the variant whose version keeps serving)")
        return _json(await service.stop_experiment(request.path_params["model"], body["keep"]))

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), 200, media_type=CONTENT_TYPE_LATEST)

    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        name = request.path_params["model"]
        status = 500
        assignment: Assignment | None = None
        try:
            service.incoming += 1  # tells the batcher another request is on its way
            try:
                body = await read_limited_body(request, limit)
                model = service.model_for_infer(name, version(request))
                payload, binary = _split_request(body, request.headers.get(HEADER_LENGTH))
                experiment = service.experiment_for_infer(name, version(request))
                if experiment is not None:  # an A/B split: the variant answers (validation included)
                    assignment = experiment.assign(_experiment_key(payload, request.headers))
                    model = assignment.model
                arrays = decode_inputs(model, _request_tensors(payload, binary))
                names, binary_out = _requested_outputs(model, payload)
            finally:
                service.incoming -= 1
            request_id = payload.get("id")
            results = await service.infer(
                model, arrays, _timeout_s(payload), request_id if isinstance(request_id, str) else ""
            )
            response = _infer_response(model, payload, names, binary_out, results, assignment)
            status = 200
            return response
        except SlipwayError as err:
            status = err.http_status
            raise
        finally:
            seconds = time.perf_counter() - started
            metrics.observe_request(name, "http", seconds, status)
            if assignment is not None:
                service.record_assignment(assignment, seconds, status)

    async def explain(request: Request) -> Response:
        """An inference request answered with the prediction plus `attributions` and `target` (explainer.py)."""
        body = await read_limited_body(request, limit)
        model = service.model(request.path_params["model"], version(request))  # unknown: 404
        payload, binary = _split_request(body, request.headers.get(HEADER_LENGTH))
        arrays = decode_inputs(model, _request_tensors(payload, binary))
        x = explained_input(model, arrays)
        params = parse_parameters(_params(payload, "request"), len(x))
        timeout = _timeout_s(payload)
        request_id = payload.get("id")
        prediction = await service.infer(
            model, arrays, timeout, request_id if isinstance(request_id, str) else ""
        )
        target = params.target if params.target is not None else default_target(prediction, len(x))
        limit_s = service.options.timeout_s if timeout is None else min(timeout, service.options.timeout_s)
        attributions, target = await service.explainer.explain(
            model, service.version_dir(model), x, params, target, limit_s
        )
        results = {**prediction, ATTRIBUTIONS: attributions, TARGET: target}
        names = list(results)
        binary_out = set(names) if _params(payload, "request").get("binary_data_output") else set()
        return _infer_response(
            model, payload, names, binary_out, results, parameters=params.response_parameters()
        )

    async def model_card(request: Request) -> Response:
        model = service.model(request.path_params["model"], version(request))
        where = f"{model.name} version {model.version}"
        data, media_type = read_card(service.version_dir(model), request.headers.get("accept"), where)
        return Response(data, 200, media_type=media_type)

    model_paths = ["/v2/models/{model}", "/v2/models/{model}/versions/{version}"]
    # (path, handler, method, Triton's restricted-API group; None: never restricted)
    table: list[tuple[str, Handler, str, str | None]] = [
        ("/v2/health/live", live, "GET", "health"),
        ("/v2/health/ready", ready, "GET", "health"),
        ("/v2", server_metadata, "GET", "metadata"),
        ("/v2/models/stats", model_stats, "GET", "statistics"),
        ("/v2/repository/index", repository_index, "POST", "model-repository"),
        ("/v2/repository/models/{model}/load", load_model, "POST", "model-repository"),
        ("/v2/repository/models/{model}/unload", unload_model, "POST", "model-repository"),
        ("/metrics", prometheus, "GET", None),
        # A Slipway extension: A/B experiments (docs/serving.md, "A/B experiments"); HTTP only.
        ("/v2/models/{model}/experiment", start_experiment, "POST", "model-repository"),
        ("/v2/models/{model}/experiment", experiment_status, "GET", "model-repository"),
        ("/v2/models/{model}/experiment/stop", stop_experiment, "POST", "model-repository"),
        # Slipway extensions: explanations (and KServe's explainer path) and model cards; HTTP only.
        ("/v1/models/{model}:explain", explain, "POST", "inference"),
    ]
    for base in model_paths:
        table += [
            (base, model_metadata, "GET", "metadata"),
            (base + "/ready", model_ready, "GET", "health"),
            (base + "/infer", infer, "POST", "inference"),
            (base + "/config", model_config, "GET", "model-config"),
            (base + "/stats", model_stats, "GET", "statistics"),
            (base + "/explain", explain, "POST", "inference"),
            (base + "/card", model_card, "GET", "metadata"),
        ]
    routes = [
        Route(path, guarded(handler, group), methods=[method]) for path, handler, method, group in table
    ]
    return Starlette(routes=routes)

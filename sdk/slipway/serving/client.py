"""One small inference client for `slipway serve` and for KServe+Triton in a cluster (Open Inference Protocol v2).

It wraps tritonclient so that the same code, HTTP or gRPC, talks to both servers. `tritonclient.grpc` is
imported only on the gRPC path: it cannot share a process with kserve (duplicate protobuf symbols).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Literal
from urllib.parse import quote, urlparse

import numpy as np

from slipway.core.errors import InferenceClientError, NotFoundError, OverloadedError, SlipwayError
from slipway.serving.datatypes import NUMPY_TO_V2, V2_TO_NUMPY

log = logging.getLogger(__name__)
Protocol = Literal["http", "grpc"]
SMOKE_ID_PREFIX = "slipway-smoke-"


def _split_url(url: str) -> tuple[str, bool]:
    """tritonclient wants host:port[/path prefix] without a scheme; https means TLS.

    The path prefix stays (tritonclient.http puts it before /v2), so a model behind an ingress path or a
    KServe revision URL with a path is reachable over HTTP.
    """
    if "://" not in url:
        return url.rstrip("/"), False
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme in ("https", "grpcs") else 80)
    return f"{parsed.hostname}:{port}{parsed.path.rstrip('/')}", parsed.scheme in ("https", "grpcs")


def _raise(err: Exception, what: str) -> None:
    status = str(getattr(err, "status", lambda: "")() or "")
    message = getattr(err, "message", lambda: str(err))() or str(err)
    text = f"{what}: {status} {message}".strip()
    if status in ("503", "StatusCode.UNAVAILABLE"):
        raise OverloadedError(text) from None
    if status in ("404", "StatusCode.NOT_FOUND"):
        raise NotFoundError(text) from None
    raise InferenceClientError(text) from None


class InferenceClient:
    """infer(model, array) -> ndarray over HTTP (binary tensors) or gRPC, plus health, metadata and config."""

    def __init__(
        self,
        url: str,
        protocol: Protocol = "http",
        timeout_s: float = 30.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        if protocol not in ("http", "grpc"):
            raise SlipwayError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
        self.url, ssl = _split_url(url)
        self._scheme = "https" if ssl else "http"
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.headers = headers or {}
        self._metadata: dict[str, dict[str, Any]] = {}
        self._client: Any
        if protocol == "http":
            import tritonclient.http as triton_http

            self._mod: Any = triton_http
            self._client = triton_http.InferenceServerClient(
                self.url, connection_timeout=timeout_s, network_timeout=timeout_s, ssl=ssl
            )
        else:
            import tritonclient.grpc as triton_grpc  # only here: it cannot coexist with kserve

            self._mod = triton_grpc
            self._client = triton_grpc.InferenceServerClient(self.url, ssl=ssl)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.protocol == "grpc":
            kwargs.setdefault("client_timeout", self.timeout_s)
        try:
            return fn(*args, headers=self.headers or None, **kwargs)
        except self._mod.InferenceServerException as err:
            _raise(err, f"{what} at {self.protocol}://{self.url}")
        except Exception as err:  # connection refused, DNS, TLS: say where
            raise InferenceClientError(f"{what} at {self.protocol}://{self.url} failed: {err}") from None

    def is_live(self) -> bool:
        return bool(self._call("server live", self._client.is_server_live))

    def is_ready(self) -> bool:
        return bool(self._call("server ready", self._client.is_server_ready))

    def is_model_ready(self, model: str) -> bool:
        return bool(self._call(f"model {model} ready", self._client.is_model_ready, model))

    def metadata(self, model: str) -> dict[str, Any]:
        """Model metadata as plain JSON (same shape from both protocols: int shapes, string versions)."""
        if self.protocol == "http":
            meta = self._call(f"model {model} metadata", self._client.get_model_metadata, model)
        else:
            from google.protobuf.json_format import MessageToDict

            msg = self._call(f"model {model} metadata", self._client.get_model_metadata, model)
            meta = MessageToDict(msg, preserving_proto_field_name=True)
            for tensor in [*meta.get("inputs", []), *meta.get("outputs", [])]:
                tensor["shape"] = [int(d) for d in tensor.get("shape", [])]
        self._metadata[model] = meta
        return dict(meta)

    def config(self, model: str) -> dict[str, Any]:
        """The Triton model configuration (model-configuration extension) as JSON."""
        if self.protocol == "http":
            return dict(self._call(f"model {model} config", self._client.get_model_config, model))
        from google.protobuf.json_format import MessageToDict

        msg = self._call(f"model {model} config", self._client.get_model_config, model)
        return MessageToDict(msg.config, preserving_proto_field_name=True)

    def load_model(self, model: str) -> None:
        """Triton's model control API: (re)load `model` from the server's repository (explicit mode)."""
        self._call(f"load model {model}", self._client.load_model, model)
        self._metadata.pop(model, None)

    def start_experiment(self, model: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Split `model` between the spec's versions A and B (an A/B experiment; explicit mode); returns its
        status: `{"spec": ..., "variants": {"a": {"version", "requests", "errors"}, "b": ...}}`."""
        return self._experiment_call(f"start experiment on {model}", "POST", model, "", spec)

    def experiment(self, model: str) -> dict[str, Any]:
        """The running experiment of `model` (spec and per-variant counts); none -> NotFoundError."""
        return self._experiment_call(f"experiment of {model}", "GET", model, "")

    def stop_experiment(self, model: str, keep: str) -> dict[str, Any]:
        """End the experiment: `keep` ("a" or "b") names the variant whose version serves on alone."""
        self._metadata.pop(model, None)
        return self._experiment_call(f"stop experiment on {model}", "POST", model, "/stop", {"keep": keep})

    def _experiment_call(
        self, what: str, method: str, model: str, suffix: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The experiment routes are a Slipway extension over HTTP (tritonclient has no call for them)."""
        import httpx

        if self.protocol != "http":
            raise SlipwayError(f"{what}: experiments are served over HTTP only; use protocol='http'")
        url = f"{self._scheme}://{self.url}/v2/models/{quote(model, safe='')}/experiment{suffix}"
        try:
            response = httpx.request(method, url, json=body, headers=self.headers, timeout=self.timeout_s)
        except httpx.HTTPError as err:
            raise InferenceClientError(f"{what} at {url} failed: {err}") from None
        if response.status_code != 200:
            try:
                error = response.json()
            except ValueError:
                error = None
            message = error["error"] if isinstance(error, dict) and "error" in error else response.text[:500]
            text = f"{what} at {url}: {response.status_code} {message}"
            if response.status_code == 503:
                raise OverloadedError(text)
            if response.status_code == 404:
                raise NotFoundError(text)
            raise InferenceClientError(text)
        result: dict[str, Any] = response.json()
        return result

    def infer(
        self,
        model: str,
        array: np.ndarray,
        input_name: str | None = None,
        output_name: str | None = None,
        request_id: str = "",
    ) -> np.ndarray:
        """One tensor in, one tensor out; names default to the model's first input and output."""
        meta = self._metadata.get(model) or self.metadata(model)
        input_name = input_name or meta["inputs"][0]["name"]
        output_name = output_name or meta["outputs"][0]["name"]
        array = np.ascontiguousarray(array)
        if array.dtype.name not in NUMPY_TO_V2:
            raise SlipwayError(f"dtype {array.dtype} cannot be sent; use one of {sorted(NUMPY_TO_V2)}")
        tensor = self._mod.InferInput(input_name, list(array.shape), NUMPY_TO_V2[array.dtype.name])
        if self.protocol == "http":
            tensor.set_data_from_numpy(array, binary_data=True)
            wanted = self._mod.InferRequestedOutput(output_name, binary_data=True)
        else:
            tensor.set_data_from_numpy(array)
            wanted = self._mod.InferRequestedOutput(output_name)
        result = self._call(
            f"infer {model}", self._client.infer, model, [tensor], outputs=[wanted], request_id=request_id
        )
        out = result.as_numpy(output_name)
        if out is None:
            raise InferenceClientError(f"infer {model}: response has no output {output_name!r}")
        return np.asarray(out)


def smoke_test(
    url: str,
    model: str,
    protocol: Protocol = "http",
    timeout_s: float = 30.0,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Check live, ready, model ready, metadata, config and one finite inference; raise naming the failing step.

    The input is zeros shaped from the metadata (batch 1), so it works on any served model with fixed dims.
    """
    with InferenceClient(url, protocol, timeout_s, headers) as client:
        deadline = time.monotonic() + timeout_s
        while not _quiet(client.is_ready):
            if time.monotonic() > deadline:
                raise InferenceClientError(f"server at {url} not ready within {timeout_s:g} s")
            time.sleep(0.2)
        if not client.is_live():
            raise InferenceClientError(f"server at {url} is not live")
        if not client.is_model_ready(model):
            client.metadata(model)  # an unknown model raises NotFoundError naming it
            raise InferenceClientError(f"model {model!r} at {url} is not ready")
        meta = client.metadata(model)
        config = client.config(model)
        spec = meta["inputs"][0]
        shape = [1 if d == -1 else d for d in spec["shape"]]
        dtype = V2_TO_NUMPY.get(spec["datatype"], np.dtype(np.float32))
        started = time.perf_counter()
        # A recognisable id: a payload logger captures this request too, and drift windows can leave it out.
        output = client.infer(
            model, np.zeros(shape, dtype=dtype), request_id=f"{SMOKE_ID_PREFIX}{uuid.uuid4().hex}"
        )
        latency_ms = (time.perf_counter() - started) * 1000
    if output.dtype.kind == "f" and not np.isfinite(output).all():
        raise InferenceClientError(f"model {model!r} at {url} answered zeros with non-finite outputs")
    report = {
        "url": url,
        "protocol": protocol,
        "model": model,
        "versions": meta.get("versions", []),
        "platform": meta.get("platform", config.get("platform", "")),
        "max_batch_size": int(config.get("max_batch_size", 0)),
        "input": spec,
        "output_shape": list(output.shape),
        "latency_ms": round(latency_ms, 3),
    }
    log.info(
        "smoke test passed url=%s model=%s protocol=%s latency_ms=%.2f", url, model, protocol, latency_ms
    )
    return report


def _quiet(check: Any) -> bool:
    try:
        return bool(check())
    except SlipwayError:
        return False

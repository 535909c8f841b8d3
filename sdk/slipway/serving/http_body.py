"""Read an HTTP request body under a size limit, and find the JSON header of a body with binary tensors: what
both Starlette servers (serve, monitor) share."""

from __future__ import annotations

from starlette.requests import Request

from slipway.core.errors import InvalidInputError, PayloadTooLargeError

HEADER_LENGTH = "inference-header-content-length"  # Triton's binary tensor data extension
# KServe's payload logger: the CloudEvent types of an inference's request and response (serve sends, monitor reads)
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes `limit` (declared or streamed), before buffering.

    A malformed Content-Length never gets here (the HTTP server answers it with 400), so only a numeric one is
    checked up front; the streamed byte count is the bound that always holds.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes (--max-body-bytes)"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes (--max-body-bytes)")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def json_header_size(value: str, body_size: int) -> int:
    """The `Inference-Header-Content-Length` value: the size of the body's JSON header in bytes, refused
    with 400 unless it is plain ASCII digits within the body ("²".isdigit() is true, yet int() refuses it; the
    length cap keeps int() cheap on a hostile header)."""
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 12 and int(text) <= body_size):
        raise InvalidInputError(
            f"Inference-Header-Content-Length {value!r:.40} must be the JSON header's size in bytes, an "
            f"integer within the body ({body_size} bytes)"
        )
    return int(text)

"""Read an HTTP request body under a size limit: the one reader both Starlette servers (serve, monitor) use."""

from __future__ import annotations

from starlette.requests import Request

from slipway.core.errors import PayloadTooLargeError


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

"""Retry one API call through transient trouble inside a long wait (tenacity), and only through that.

Transient: HTTP 429 (Retry-After honoured), 5xx except 501 Not Implemented, a reset, refused or timed-out
connection. Anything else (403, 404, 409, 422, a bad request, a TLS failure) is raised at once: waiting cannot
fix it. Retries never outlast the deadline of the wait they serve: the last one happens at the deadline and its
error is raised as it came. Only idempotent reads are retried (polls); creates are not.
$SLIPWAY_RETRY_BACKOFF_S sets the first backoff (default 1 s; doubled each attempt up to 30 s, with jitter).
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
BACKOFF_ENV = "SLIPWAY_RETRY_BACKOFF_S"
DEFAULT_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


def _status(err: BaseException) -> int | None:
    """The HTTP status an API exception carries (kubernetes / kfp_server_api ApiException, httpx errors)."""
    status = getattr(err, "status", None)
    if status is None:
        status = getattr(getattr(err, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def is_transient(err: BaseException) -> bool:
    """Whether a retry may succeed where this call failed: see the module docstring."""
    import urllib3.exceptions as u3

    status = _status(err)
    if status:
        return status in RETRYABLE_STATUS or (status >= 500 and status != 501)
    if isinstance(err, u3.MaxRetryError):  # urllib3 gave up on its own retries; judge the last failure
        reason = err.reason
        return reason is None or isinstance(reason, u3.ResponseError) or is_transient(reason)
    if isinstance(err, u3.SSLError | u3.LocationValueError):
        return False
    if isinstance(err, u3.ProtocolError | u3.TimeoutError | u3.NewConnectionError | u3.ProxyError):
        return True
    if isinstance(err, ConnectionError | TimeoutError):  # reset, refused, aborted; socket timeouts
        return True
    return type(err).__name__ in {"ConnectError", "ReadTimeout", "ConnectTimeout", "RemoteProtocolError"}


def retry_after_s(err: BaseException, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date), when the error carries one."""
    headers = getattr(err, "headers", None)
    if headers is None:
        headers = getattr(getattr(err, "response", None), "headers", None)
    if not headers:
        return None
    value = next((v for k, v in dict(headers).items() if str(k).lower() == "retry-after"), None)
    if value is None:
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())


def backoff_s() -> float:
    """The first backoff: $SLIPWAY_RETRY_BACKOFF_S, else 1 s."""
    raw = os.environ.get(BACKOFF_ENV)
    if not raw:
        return DEFAULT_BACKOFF_S
    try:
        value = float(raw)
    except ValueError:
        from slipway.core.errors import ConfigError

        raise ConfigError(f"${BACKOFF_ENV} must be a number of seconds, got {raw!r}") from None
    if value < 0:
        from slipway.core.errors import ConfigError

        raise ConfigError(f"${BACKOFF_ENV} must be 0 or more seconds, got {raw!r}")
    return value


def call_with_retries(
    call: Callable[[], T],
    *,
    what: str,
    deadline: float | None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    first_backoff_s: float | None = None,
) -> T:
    """`call()`, retried on transient errors with exponential backoff and jitter until `deadline` (on `clock`).

    Each retry is logged at WARNING with the attempt and the error; the last error is re-raised unchanged, so
    callers keep mapping API errors to messages as before. With no deadline, `call()` runs once, unretried.
    """
    if deadline is None:
        return call()
    import tenacity

    first = backoff_s() if first_backoff_s is None else first_backoff_s
    exponential = tenacity.wait_random_exponential(multiplier=first, max=max(first, MAX_BACKOFF_S))

    def wait(state: tenacity.RetryCallState) -> float:
        err = state.outcome.exception() if state.outcome else None
        hinted = retry_after_s(err) if err is not None else None
        # wait_random_exponential draws from [0, multiplier * 2**n]: keep at least half of it (a floor of the
        # first backoff) so that a storm of errors is not hammered at once.
        delay = hinted if hinted is not None else max(first, exponential(state))
        return max(0.0, min(delay, deadline - clock()))

    def stop(state: tenacity.RetryCallState) -> bool:
        return clock() >= deadline

    def report(state: tenacity.RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s: transient error on attempt %d (%s); retrying in %.2f s, %.0f s left to wait",
            what,
            state.attempt_number,
            _describe(err),
            state.upcoming_sleep,
            max(0.0, deadline - clock()),
        )

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        wait=wait,
        stop=stop,
        sleep=sleep,
        before_sleep=report,
        reraise=True,
    )
    return retrying(call)


def _describe(err: BaseException | None) -> str:
    if err is None:
        return "no error"
    status = _status(err)
    if status:
        reason = getattr(err, "reason", None) or ""
        return f"HTTP {status} {reason}".strip()
    return f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"

"""slipway.cluster.retry: which errors are transient, Retry-After, backoff, and the deadline bound.

Time is simulated (an injected clock and sleep); the errors are the real client libraries' exception types.
The boundary tests (real clients against HTTP doubles serving injected faults) are in
tests/serving/test_transient_retries.py and tests/pipelines/test_kfp_transient_errors.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import kfp_server_api
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from slipway.cluster import retry


def _api_error(status: int, headers: dict[str, str] | None = None) -> ApiException:
    err = ApiException(status=status, reason="reason")
    err.headers = headers
    return err


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 599])
def test_throttling_and_server_errors_are_transient(status: int) -> None:
    assert retry.is_transient(_api_error(status))
    assert retry.is_transient(kfp_server_api.ApiException(status=status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501])
def test_client_errors_and_not_implemented_are_not(status: int) -> None:
    assert not retry.is_transient(_api_error(status))


def test_connection_trouble_is_transient_and_tls_is_not() -> None:
    pool = urllib3.HTTPConnectionPool("127.0.0.1", 1)
    refused = urllib3.exceptions.NewConnectionError(pool, "refused")  # type: ignore[arg-type]
    assert retry.is_transient(ConnectionResetError(104, "reset"))
    assert retry.is_transient(ConnectionRefusedError(111, "refused"))
    assert retry.is_transient(TimeoutError())
    assert retry.is_transient(urllib3.exceptions.ProtocolError("aborted", ConnectionResetError()))
    assert retry.is_transient(urllib3.exceptions.MaxRetryError(pool, "/", refused))
    assert retry.is_transient(urllib3.exceptions.MaxRetryError(pool, "/", urllib3.exceptions.ResponseError()))
    assert retry.is_transient(urllib3.exceptions.ReadTimeoutError(pool, "/", "slow"))
    assert not retry.is_transient(urllib3.exceptions.SSLError("bad certificate"))
    assert not retry.is_transient(urllib3.exceptions.MaxRetryError(pool, "/", urllib3.exceptions.SSLError()))
    assert not retry.is_transient(kfp_server_api.ApiException(status=0, reason="SSLError"))  # kfp's TLS error
    assert not retry.is_transient(ValueError("a bug"))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _failing(*errors: BaseException, result: str = "ok") -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []
    queue = list(errors)

    def call() -> str:
        calls.append(1)
        if queue:
            raise queue.pop(0)
        return result

    return calls, call


def test_transient_errors_are_retried_with_growing_jittered_backoff(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    calls, call = _failing(*[_api_error(503) for _ in range(5)])
    with caplog.at_level(logging.WARNING, logger="slipway.cluster.retry"):
        got = retry.call_with_retries(
            call, what="get thing", deadline=1000, clock=clock, sleep=clock.sleep, first_backoff_s=1
        )
    assert got == "ok" and len(calls) == 6
    assert all(1 <= s <= 2**n for n, s in enumerate(clock.sleeps, start=1))  # floor 1 s, cap 1 * 2**n
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5
    assert "get thing" in warnings[0].getMessage() and "attempt 1" in warnings[0].getMessage()
    assert "HTTP 503" in warnings[0].getMessage()


def test_retry_after_is_honoured_in_seconds_and_as_a_date() -> None:
    clock = Clock()
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    _, call = _failing(_api_error(429, {"Retry-After": "7"}), _api_error(503, {"retry-after": later}))
    assert retry.call_with_retries(call, what="x", deadline=1000, clock=clock, sleep=clock.sleep) == "ok"
    assert clock.sleeps[0] == 7
    assert 25 <= clock.sleeps[1] <= 31


def test_permanent_errors_are_raised_at_once() -> None:
    clock = Clock()
    for status in (403, 404, 409, 422):
        calls, call = _failing(_api_error(503), _api_error(status))
        with pytest.raises(ApiException) as err:
            retry.call_with_retries(call, what="x", deadline=1000, clock=clock, sleep=clock.sleep)
        assert err.value.status == status and len(calls) == 2


def test_retries_end_at_the_deadline_with_the_last_error() -> None:
    clock = Clock()
    calls, call = _failing(*[_api_error(503) for _ in range(100)])
    with pytest.raises(ApiException) as err:
        retry.call_with_retries(
            call, what="x", deadline=10, clock=clock, sleep=clock.sleep, first_backoff_s=1
        )
    assert err.value.status == 503
    assert clock.now == 10  # the last sleep is cut to the deadline, then one last try
    assert 3 <= len(calls) <= 11


def test_backoff_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(retry.BACKOFF_ENV, "0.01")
    assert retry.backoff_s() == 0.01
    monkeypatch.setenv(retry.BACKOFF_ENV, "soon")
    from slipway.core.errors import ConfigError

    with pytest.raises(ConfigError, match="SLIPWAY_RETRY_BACKOFF_S"):
        retry.backoff_s()

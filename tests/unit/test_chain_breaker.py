"""The circuit breaker's state machine and the fault classification, with a fake clock."""

from __future__ import annotations

import email.utils
import time

import pytest

from pipelines import resilience as rz
from pipelines.providers import ProviderError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_opens_after_consecutive_failures_only(clock: Clock) -> None:
    b = rz.CircuitBreaker(failures_to_open=3, cooldown=10, clock=clock)
    b.record_failure(rz.SERVER)
    b.record_failure(rz.SERVER)
    b.record_success()  # resets the count
    b.record_failure(rz.SERVER)
    b.record_failure(rz.SERVER)
    assert b.state == "closed" and b.allow()
    b.record_failure(rz.TIMEOUT)
    assert b.state == "open" and not b.allow()
    assert b.status() == {
        "state": "open",
        "failures": 3,
        "retry_in_s": 10.0,
        "last_fault": "timeout",
    }


def test_half_open_allows_one_probe_and_closes_on_success(clock: Clock) -> None:
    b = rz.CircuitBreaker(failures_to_open=1, cooldown=10, clock=clock)
    b.record_failure(rz.SERVER)
    clock.now += 9.9
    assert not b.allow()
    clock.now += 0.2
    assert b.state == "half_open"
    assert b.allow()  # the probe
    assert not b.allow()  # only one at a time
    b.record_success()
    assert b.state == "closed" and b.allow() and b.failures == 0


def test_failed_probe_doubles_the_cooldown_up_to_the_max(clock: Clock) -> None:
    b = rz.CircuitBreaker(failures_to_open=1, cooldown=10, max_cooldown=25, clock=clock)
    b.record_failure(rz.SERVER)
    for expected in (20, 25, 25):
        clock.now += 100
        assert b.allow()
        b.record_failure(rz.SERVER)
        assert b.status()["retry_in_s"] == expected


def test_released_or_forgotten_probe_lets_another_through(clock: Clock) -> None:
    b = rz.CircuitBreaker(failures_to_open=1, cooldown=10, clock=clock)
    b.record_failure(rz.SERVER)
    clock.now += 10
    assert b.allow()
    b.release()
    assert b.allow()
    clock.now += 10  # a probe that never reported is forgotten after a cooldown
    assert b.allow()


def test_permanent_fault_opens_at_once_for_the_max_cooldown(clock: Clock) -> None:
    b = rz.CircuitBreaker(failures_to_open=5, cooldown=10, max_cooldown=300, clock=clock)
    b.record_failure(rz.AUTH, permanent=True)
    assert b.state == "open" and b.status()["retry_in_s"] == 300


def test_rate_limit_opens_for_retry_after(clock: Clock) -> None:
    b = rz.CircuitBreaker(failures_to_open=5, cooldown=10, max_cooldown=60, clock=clock)
    b.record_failure(rz.RATE_LIMITED, retry_after=42)
    assert b.state == "open" and b.status()["retry_in_s"] == 42
    b.record_success()
    b.record_failure(rz.RATE_LIMITED, retry_after=999)
    assert b.status()["retry_in_s"] == 60  # capped
    b.record_success()
    b.record_failure(rz.RATE_LIMITED)  # no retry-after: an ordinary failure
    assert b.state == "closed"


def test_from_status() -> None:
    assert rz.from_status("p", 401).kind == rz.AUTH and rz.from_status("p", 401).permanent
    assert rz.from_status("p", 403).permanent
    assert rz.from_status("p", 400).kind == rz.BAD_REQUEST
    e = rz.from_status("p", 429, {"Retry-After": "3"})
    assert e.kind == rz.RATE_LIMITED and not e.permanent and e.retry_after == 3.0
    assert rz.from_status("p", 529).kind == rz.SERVER
    assert rz.from_status("p", 504).kind == rz.TIMEOUT
    assert str(rz.from_status("p", 500, detail="api_error")) == "p: server: HTTP 500 api_error"


def test_retry_after_forms() -> None:
    assert rz.retry_after_of({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert rz.retry_after_of({"retry-after": "garbage"}) is None
    assert rz.retry_after_of(None) is None
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= rz.retry_after_of({"Retry-After": date}) <= 31  # type: ignore[operator]


def test_error_type_is_restricted_to_identifiers() -> None:
    assert rz.error_type_of({"type": "error", "error": {"type": "overloaded_error"}}) == (
        "overloaded_error"
    )
    assert rz.error_type_of({"error": {"type": "a message with spaces sk-123"}}) == ""
    assert rz.error_type_of("not a dict") == ""


def test_classify_exceptions_by_shape() -> None:
    class APIError(Exception):
        def __init__(self) -> None:
            self.body = {"type": "error", "error": {"type": "overloaded_error"}}
            self.status_code = 200

    class APIConnectionError(Exception):
        pass

    class ReadTimeout(Exception):
        pass

    class RemoteProtocolError(Exception):
        pass

    assert rz.classify_exception("p", APIError()).kind == rz.SERVER
    assert rz.classify_exception("p", APIConnectionError()).kind == rz.CONNECT
    assert rz.classify_exception("p", APIConnectionError(), started=True).kind == rz.DROPPED
    assert rz.classify_exception("p", ReadTimeout()).kind == rz.TIMEOUT
    assert rz.classify_exception("p", RemoteProtocolError()).kind == rz.DROPPED
    assert rz.classify_exception("p", ValueError("bad json")).kind == rz.PROTOCOL
    err = ProviderError("p", "auth", "x", permanent=True)
    assert rz.classify_exception("p", err) is err


def test_redaction_filter_scrubs_secrets_from_any_record(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    logger = logging.getLogger("test.redaction")
    rz.install_redaction(["test.redaction"], ["sk-very-secret"])
    caplog.set_level(logging.DEBUG, logger="test.redaction")
    logger.debug("> %s: %s", "Authorization", "Token sk-very-secret")
    assert "sk-very-secret" not in caplog.text and "Authorization: Token ***" in caplog.text

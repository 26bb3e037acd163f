"""Fault vocabulary and the per-provider circuit breaker used by the provider chains.

Every adapter turns its SDK's exceptions into a `ProviderError` with one of the `kind`s
below, so the chain, the metrics and the logs speak one language whatever the provider.
Messages are built from status codes and error *types* only, never from response bodies
or request headers, so an API key can never travel into a log line through an error.
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pipelines.providers import ProviderError

# Fault kinds (the `kind` of a ProviderError and the label of the error metric).
AUTH = "auth"  # 401/403: bad or missing key. Permanent.
BAD_REQUEST = "bad_request"  # 400/404/422: we sent something the provider rejects. Permanent.
RATE_LIMITED = "rate_limited"  # 429: honour retry-after.
SERVER = "server"  # 5xx, overloaded, an error event in the stream.
TIMEOUT = "timeout"  # no connection or no first byte in time, or a stalled stream.
CONNECT = "connect"  # connection refused / reset before the response.
DROPPED = "dropped"  # the stream ended before its end-of-stream marker.
PROTOCOL = "protocol"  # a message we could not parse.
EMPTY = "empty"  # a well-formed answer with nothing in it.
ERROR = "error"  # anything else (a bug in an adapter or an SDK).

_PERMANENT_STATUS = {400: BAD_REQUEST, 401: AUTH, 403: AUTH, 404: BAD_REQUEST, 422: BAD_REQUEST}


def fault(
    provider: str,
    kind: str,
    message: str = "",
    *,
    permanent: bool = False,
    retry_after: float | None = None,
) -> ProviderError:
    """A ProviderError carrying `retry_after` (seconds) when the provider asked for one."""
    err = ProviderError(provider, kind, message or kind, permanent=permanent)
    err.retry_after = retry_after  # type: ignore[attr-defined]
    return err


def from_status(
    provider: str, status: int, headers: Mapping[str, str] | None = None, detail: str = ""
) -> ProviderError:
    """Classify an HTTP (or WebSocket handshake) status. `detail` must be an error type
    such as `overloaded_error`, never a free-text message from the provider."""
    message = f"HTTP {status}" + (f" {detail}" if detail else "")
    if status in _PERMANENT_STATUS:
        return fault(provider, _PERMANENT_STATUS[status], message, permanent=True)
    if status == 429:
        return fault(provider, RATE_LIMITED, message, retry_after=retry_after_of(headers))
    if status in (408, 504):
        return fault(provider, TIMEOUT, message)
    if status >= 500:
        return fault(provider, SERVER, message)
    return fault(provider, ERROR, message)


def retry_after_of(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (delta-seconds or an HTTP date)."""
    if not headers:
        return None
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    if (ms := lower.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    raw = lower.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_type_of(body: object) -> str:
    """The provider's error *type* (`overloaded_error`, `invalid_api_key`, ...) from an
    Anthropic/OpenAI style error body, restricted to a safe identifier."""
    err: Any = body.get("error", body) if isinstance(body, Mapping) else None
    if isinstance(err, Mapping):
        value = err.get("type") or err.get("code") or ""
        if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", value):
            return value
    return ""


class CircuitBreaker:
    """closed -> open after `failures_to_open` consecutive failures -> half-open (one probe)
    after the cooldown -> closed on a successful probe, open again (cooldown doubled, up to
    `max_cooldown`) on a failed one. Permanent faults open it at once for `max_cooldown`;
    a 429 opens it for the provider's retry-after. Time comes from `clock` so tests and
    the state machine need no sleeping."""

    def __init__(
        self,
        failures_to_open: int = 3,
        cooldown: float = 30.0,
        max_cooldown: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures_to_open = max(1, failures_to_open)
        self.base_cooldown = cooldown
        self.max_cooldown = max(cooldown, max_cooldown)
        self._clock = clock
        self._state = "closed"
        self.failures = 0
        self._cooldown = cooldown
        self._open_until = 0.0
        self._probe_since: float | None = None
        self.last_fault = ""

    @property
    def state(self) -> str:
        if self._state == "open" and self._clock() >= self._open_until:
            return "half_open"
        return self._state

    def allow(self) -> bool:
        """May a call go to this provider now? In half-open, only one probe at a time (a
        probe that never reports back is forgotten after a cooldown)."""
        if self._state == "closed":
            return True
        now = self._clock()
        if self._state == "open":
            if now < self._open_until:
                return False
            self._state = "half_open"
            self._probe_since = None
        if self._probe_since is not None and now - self._probe_since < self._cooldown:
            return False
        self._probe_since = now
        return True

    def release(self) -> None:
        """The call was cancelled before it proved anything (e.g. a barge-in)."""
        self._probe_since = None

    def record_success(self) -> None:
        self._state = "closed"
        self.failures = 0
        self._cooldown = self.base_cooldown
        self._probe_since = None

    def record_failure(
        self, kind: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        self.failures += 1
        self.last_fault = kind
        self._probe_since = None
        if permanent:
            self._open(self.max_cooldown)
        elif retry_after is not None and kind == RATE_LIMITED:
            self._open(min(max(retry_after, 0.0), self.max_cooldown))
        elif self._state == "half_open":
            self._cooldown = min(self._cooldown * 2, self.max_cooldown)
            self._open(self._cooldown)
        elif self.failures >= self.failures_to_open:
            self._open(self._cooldown)

    def _open(self, seconds: float) -> None:
        self._state = "open"
        self._open_until = self._clock() + seconds

    def status(self) -> dict[str, Any]:
        state = self.state
        retry_in = max(0.0, self._open_until - self._clock()) if state == "open" else 0.0
        return {
            "state": state,
            "failures": self.failures,
            "retry_in_s": round(retry_in, 3),
            "last_fault": self.last_fault,
        }


class RedactSecrets(logging.Filter):
    """Replace every given secret by `***` in a record's message and arguments.

    Our own code never logs keys; this guards against libraries that do at debug level
    (the `websockets` client logs request headers, `Authorization` included)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if any(s in message for s in self._secrets):
            for s in self._secrets:
                message = message.replace(s, "***")
            record.msg, record.args = message, None
        return True


def install_redaction(logger_names: Iterable[str], secrets: Iterable[str]) -> None:
    """Attach one `RedactSecrets` to each named logger (records logged on it directly)."""
    flt = RedactSecrets(secrets)
    for name in logger_names:
        logging.getLogger(name).addFilter(flt)


_DROP_NAMES = frozenset(
    {"RemoteProtocolError", "ReadError", "ConnectionClosed", "TransportError",
     "IncompleteReadError", "ClientPayloadError"}
)  # fmt: skip
_STREAM_ERROR_TYPES = {
    "overloaded_error": (SERVER, False),
    "api_error": (SERVER, False),
    "server_error": (SERVER, False),
    "rate_limit_error": (RATE_LIMITED, False),
    "authentication_error": (AUTH, True),
    "permission_error": (AUTH, True),
    "invalid_request_error": (BAD_REQUEST, True),
    "not_found_error": (BAD_REQUEST, True),
}


def classify_exception(
    provider: str, exc: BaseException, *, started: bool = False
) -> ProviderError:
    """Map an SDK or transport exception (anthropic, openai, deepgram, httpx, websockets)
    onto a fault kind, by duck typing so this module imports no SDK. A connection error
    once the response `started` is a dropped stream."""
    err = _classify(provider, exc)
    if started and err.kind == CONNECT:
        return fault(provider, DROPPED, err.args[0].split(": ", 2)[-1])
    return err


def _classify(provider: str, exc: BaseException) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    etype = error_type_of(body)
    if isinstance(status, int) and status >= 400:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None) or getattr(exc, "headers", None)
        return from_status(provider, status, headers, etype)
    if etype or ("APIError" in names and "APIConnectionError" not in names):
        # An error event inside a 200 stream: classify by its type.
        kind, permanent = _STREAM_ERROR_TYPES.get(etype, (SERVER, False))
        return fault(provider, kind, f"stream error {etype}".strip(), permanent=permanent)
    if isinstance(exc, TimeoutError) or any("Timeout" in n for n in names):
        return fault(provider, TIMEOUT, type(exc).__name__)
    if (
        "APIConnectionError" in names
        or "ConnectError" in names
        or isinstance(exc, ConnectionRefusedError)
    ):
        return fault(provider, CONNECT, type(exc).__name__)
    if names & _DROP_NAMES or isinstance(exc, OSError):
        return fault(provider, DROPPED, type(exc).__name__)
    if isinstance(exc, ValueError | KeyError | TypeError | AttributeError | IndexError):
        return fault(provider, PROTOCOL, type(exc).__name__)
    return fault(provider, ERROR, type(exc).__name__)

"""JSON error responses and the ring buffer of recent errors the admin API shows.

Every error carries the request id (the correlation id): the same value is in the
`X-Request-ID` response header and in the access-log line, so an operator can go from
`/admin/api/metrics/errors` straight to the logs.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web


def json_error(
    status: int,
    code: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """The project's error shape: {"error": {"code": ..., "message": ...}}."""
    return web.json_response(
        {"error": {"code": code, "message": message, **extra}}, status=status, headers=headers
    )


@dataclass(slots=True, frozen=True)
class ErrorRecord:
    time: float  # unix seconds
    kind: str  # "http" or "provider"
    route: str  # route template, or "voice:<stage>" for provider errors
    method: str
    status: int  # 0 for errors that are not HTTP responses
    code: str  # the error code of the JSON body, the exception type, or the provider kind
    message: str
    request_id: str | None
    session_id: str | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["time_iso"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time))
        return d


class ErrorLog:
    """The most recent errors, newest first; old ones fall off the end (bounded)."""

    def __init__(self, capacity: int = 200) -> None:
        self._items: deque[ErrorRecord] = deque(maxlen=capacity)
        self.total = 0

    def add(self, record: ErrorRecord) -> None:
        self._items.appendleft(record)
        self.total += 1

    def recent(self, limit: int) -> list[dict[str, Any]]:
        return [r.to_dict() for r, _ in zip(self._items, range(limit), strict=False)]

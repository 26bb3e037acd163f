"""A limit's refusal as the HTTP API's error: 429 `rate_limited` with Retry-After."""

from __future__ import annotations

from collections.abc import Awaitable

from server.http_errors import ApiError
from server.limits.policy import Limited


async def within(check: Awaitable[None]) -> None:
    """Await a `Limits` check; a refusal becomes a 429 JSON error."""
    try:
        await check
    except Limited as exc:
        raise ApiError(
            429, "rate_limited", str(exc), **{"Retry-After": exc.retry_after_header}
        ) from None

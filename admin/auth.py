"""Admin key and metrics token checks, with a per-client limit on failed attempts.

The key is compared with `hmac.compare_digest` so timing does not leak it. A client that
fails too often is answered 429 with `Retry-After` (even if it then sends the right key)
until its oldest failure leaves the window: that makes guessing slow. The table of clients
is bounded; the least recently failing clients are forgotten first.
"""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable


def keys_match(expected: str, given: str | None) -> bool:
    """Constant-time comparison; an empty expected key never matches anything."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "replace"))


class FailureLimiter:
    """At most `max_failures` failed attempts per client in `window_seconds`."""

    def __init__(
        self,
        max_failures: int = 10,
        window_seconds: float = 60.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self._max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str) -> int:
        """Seconds the client must wait before trying again; 0 when it may try now."""
        times = self._failures.get(client)
        if not times:
            return 0
        now = self._clock()
        while times and now - times[0] >= self.window:
            times.popleft()
        if len(times) < self.max_failures:
            return 0
        return max(1, math.ceil(self.window - (now - times[0])))

    def fail(self, client: str) -> None:
        times = self._failures.pop(client, None)
        if times is None:
            times = deque(maxlen=self.max_failures)
        times.append(self._clock())
        self._failures[client] = times  # most recent at the end
        while len(self._failures) > self._max_clients:
            self._failures.popitem(last=False)

"""Admin key and metrics token checks, with a per-client limit on failed attempts.

The key is compared with `hmac.compare_digest` so timing does not leak it. A right key is
always accepted: no one else's failures (and not even one's own) lock an operator out.
Only failures count: a client address that sends more than `max_failures` wrong keys in
`window_seconds` is answered 429 with `Retry-After` for its wrong keys, and each time it
runs over again the wait doubles (up to `max_backoff_seconds`). Together with the
per-address request limit this bounds how fast one address can guess, and the minimum key
length (`MIN_KEY_CHARS`, enforced at start-up) makes guessing hopeless anyway. The admin
key and the metrics token have a limiter each, so failures against one never slow the
other. The table of clients is bounded; the least recently failing are forgotten first.
"""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: ADMIN_API_KEY and METRICS_TOKEN must be at least this long (checked at start-up).
MIN_KEY_CHARS = 16


def keys_match(expected: str, given: str | None) -> bool:
    """Constant-time comparison; an empty expected key never matches anything."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "replace"))


@dataclass
class _Client:
    failures: deque[float]
    #: Until when this client's wrong keys are answered 429, and how long the last wait was.
    blocked_until: float = 0.0
    backoff: float = 0.0
    strikes: int = field(default=0)


class FailureLimiter:
    """At most `max_failures` failed attempts per client in `window_seconds`, then waits
    that double each time the client runs over again."""

    def __init__(
        self,
        max_failures: int = 10,
        window_seconds: float = 60.0,
        max_backoff_seconds: float = 900.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self.max_backoff = max_backoff_seconds
        self._max_clients = max_clients
        self._clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def retry_after(self, client: str) -> int:
        """Seconds this client's wrong keys are refused for; 0 when it is not blocked."""
        state = self._clients.get(client)
        if state is None:
            return 0
        left = state.blocked_until - self._clock()
        return max(1, math.ceil(left)) if left > 0 else 0

    def fail(self, client: str) -> int:
        """Record a wrong key; the seconds the client must now wait (0: not blocked)."""
        now = self._clock()
        state = self._clients.pop(client, None)
        if state is None:
            state = _Client(deque(maxlen=self.max_failures))
        self._clients[client] = state  # most recent at the end
        while len(self._clients) > self._max_clients:
            self._clients.popitem(last=False)
        if state.blocked_until > now:
            return self.retry_after(client)
        times = state.failures
        while times and now - times[0] >= self.window:
            times.popleft()
        times.append(now)
        if len(times) < self.max_failures:
            if state.strikes and now - state.blocked_until > self.window:
                state.strikes = 0  # behaved for a whole window since its last wait
            return 0
        state.strikes += 1
        state.backoff = min(self.max_backoff, self.window * 2 ** (state.strikes - 1))
        state.blocked_until = now + state.backoff
        times.clear()
        return self.retry_after(client)

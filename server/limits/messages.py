"""How many control messages one voice connection may send: pure, time passed in.

`per_second` sustained, twice as many at once. What is over is dropped (the connection
and the session go on) and the client is told at most once a second, so a flood is not
answered with a flood.
"""

from __future__ import annotations

import enum

from server.limits.bucket import Rate, TokenBucket


class Verdict(enum.Enum):
    ALLOW = "allow"
    DROP = "drop"
    #: Drop it, and tell the client (the first drop in a second).
    DROP_AND_TELL = "drop_and_tell"


class MessageBudget:
    __slots__ = ("_bucket", "_rate", "_told_at", "dropped")

    def __init__(self, per_second: float, now: float) -> None:
        self._rate = Rate(per_second, 2.0 * per_second)
        self._bucket = TokenBucket(self._rate.burst, now)
        self._told_at = float("-inf")
        self.dropped = 0

    def take(self, now: float) -> Verdict:
        if self._bucket.take(self._rate, now) == 0.0:
            return Verdict.ALLOW
        self.dropped += 1
        if now - self._told_at >= 1.0:
            self._told_at = now
            return Verdict.DROP_AND_TELL
        return Verdict.DROP

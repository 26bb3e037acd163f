"""Token buckets and concurrency counts, per key, in this process: pure, time passed in.

`KeyedBuckets.take(key, now)` answers how long the key must wait (0.0: go ahead, one
token taken). `Counts.acquire(key, limit)` holds one of at most `limit` places for the key.
Both tables are bounded: when `max_keys` keys are held, the least recently used key is
forgotten first (a forgotten bucket starts full again; that is the stated overflow rule,
generous to a client rather than wrong about it). Counts never forget a key that holds a
place, so a concurrency limit cannot be escaped by flooding the table with keys; a full
table of held places refuses new keys instead.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rate:
    """`per_second` tokens a second, at most `burst` saved up."""

    per_second: float
    burst: float

    @classmethod
    def per_minute(cls, count: int, burst_fraction: float = 0.25) -> Rate:
        """`count` a minute, with `burst_fraction` of a minute's worth allowed at once."""
        return cls(count / 60.0, max(1.0, count * burst_fraction))


class TokenBucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp

    def take(self, rate: Rate, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens: 0.0, or the seconds until they would be there (none taken)."""
        elapsed = max(0.0, now - self.stamp)
        self.tokens = min(rate.burst, self.tokens + elapsed * rate.per_second)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / rate.per_second


class KeyedBuckets:
    """One TokenBucket per key, at most `max_keys` kept."""

    def __init__(self, rate: Rate, max_keys: int = 100_000) -> None:
        self.rate = rate
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self.rate.burst, now)
        self._buckets[key] = bucket  # most recently used at the end
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return bucket.take(self.rate, now, cost)

    def __len__(self) -> int:
        return len(self._buckets)


class Counts:
    """How many places each key holds, for concurrency limits."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._max_keys = max_keys
        self._held: dict[str, int] = {}

    def acquire(self, key: str, limit: int) -> bool:
        held = self._held.get(key, 0)
        if held >= limit or (held == 0 and len(self._held) >= self._max_keys):
            return False
        self._held[key] = held + 1
        return True

    def release(self, key: str) -> None:
        held = self._held.get(key, 0)
        if held <= 1:
            self._held.pop(key, None)
        else:
            self._held[key] = held - 1

    def held(self, key: str) -> int:
        return self._held.get(key, 0)

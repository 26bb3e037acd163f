"""How fast a client may send audio: at most `max_speed` times real time, sustained, with
`burst_s` seconds of slack.

A token bucket counting samples at the stream's rate. It holds `burst_s * rate` samples
and refills at `max_speed * rate` samples a second of the clock passed in; it starts full,
so a client may send `burst_s` seconds of audio ahead of real time at once (network
jitter, a reconnect's backlog). A real-time client spends `rate` samples a second and
never runs out. Samples beyond the bucket are refused, and the caller drops them.

Pure: no clock of its own and no I/O; `now` is any monotonic time in seconds.
"""

from __future__ import annotations


class AudioPace:
    __slots__ = (
        "_cap",
        "_last",
        "_per_s",
        "_rate",
        "_tokens",
        "burst_s",
        "dropped_seconds",
        "max_speed",
    )

    def __init__(self, rate: int, max_speed: float, burst_s: float, now: float) -> None:
        if rate <= 0 or max_speed <= 0 or burst_s <= 0:
            raise ValueError("rate, max_speed and burst_s must be positive")
        self.max_speed = max_speed
        self.burst_s = burst_s
        self._rate = rate
        self._cap = float(int(burst_s * rate))
        self._per_s = max_speed * rate
        self._tokens = self._cap
        self._last = now
        #: Seconds of audio refused so far.
        self.dropped_seconds = 0.0

    @property
    def rate(self) -> int:
        return self._rate

    @property
    def capacity(self) -> int:
        """Samples the full bucket holds."""
        return int(self._cap)

    def available(self, now: float) -> int:
        """Samples that would be admitted now."""
        self._refill(now)
        return int(self._tokens + 1e-6)  # float refill: 23999.9999999 is 24000

    def admit(self, samples: int, now: float) -> int:
        """Take up to `samples` from the bucket; returns how many are admitted (the first
        ones: the caller keeps that prefix and drops the rest). Hot path: once per frame."""
        elapsed = now - self._last
        if elapsed > 0:
            tokens = self._tokens + elapsed * self._per_s
            if tokens > self._cap:
                tokens = self._cap
            self._last = now
        else:
            tokens = self._tokens
        if samples <= tokens:
            self._tokens = tokens - samples
            return samples
        allowed = min(samples, int(tokens + 1e-6))
        self._tokens = max(0.0, tokens - allowed)
        self.dropped_seconds += (samples - allowed) / self._rate
        return allowed

    def set_rate(self, rate: int, now: float) -> None:
        """The stream changed its sample rate: keep the same seconds of slack (a client
        cannot refill the bucket by reconfiguring)."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._refill(now)
        self._tokens *= rate / self._rate
        self._rate = rate
        self._cap = float(int(self.burst_s * rate))
        self._per_s = self.max_speed * rate

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self._cap, self._tokens + elapsed * self._per_s)
            self._last = now

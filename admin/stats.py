"""Bounded in-process statistics for the admin API: latency histograms and counters.

Percentiles come from HDR-style logarithmic buckets (about 4% relative precision from
0.1 ms to 10 minutes) held in a fixed-size list per series, so memory does not grow with
traffic. A `WindowedHistogram` keeps the same buckets for the last few minutes too, in a
ring of one-minute slots, so the dashboard shows how latency is now, not since start-up.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

_MIN_S = 1e-4  # 0.1 ms: anything faster lands in the first bucket
_GROWTH = 1.04  # each bucket is 4% wider than the one before
_LOG_GROWTH = math.log(_GROWTH)
_BUCKETS = int(math.log(600.0 / _MIN_S) / _LOG_GROWTH) + 2  # up to 10 minutes, ~400 ints


def _index(seconds: float) -> int:
    if seconds <= _MIN_S:
        return 0
    return min(_BUCKETS - 1, int(math.log(seconds / _MIN_S) / _LOG_GROWTH) + 1)


def _bucket_value(index: int) -> float:
    """A representative value for a bucket: the geometric middle of its bounds."""
    if index == 0:
        return _MIN_S
    lower = _MIN_S * _GROWTH ** (index - 1)
    return lower * math.sqrt(_GROWTH)


class LogHistogram:
    """Counts of observations in fixed logarithmic buckets, plus count, sum and max."""

    __slots__ = ("count", "counts", "max", "sum")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.counts[_index(seconds)] += 1
        self.count += 1
        self.sum += seconds
        self.max = max(self.max, seconds)

    def merge(self, other: LogHistogram) -> None:
        for i, c in enumerate(other.counts):
            if c:
                self.counts[i] += c
        self.count += other.count
        self.sum += other.sum
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1) in seconds, or None with no observations."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return min(_bucket_value(i), self.max)
        return self.max  # pragma: no cover - counts always sum to count

    def summary_ms(self) -> dict[str, float | int | None]:
        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1000.0, 2)

        return {
            "count": self.count,
            "p50_ms": ms(self.quantile(0.50)),
            "p95_ms": ms(self.quantile(0.95)),
            "p99_ms": ms(self.quantile(0.99)),
            "max_ms": ms(self.max if self.count else None),
            "mean_ms": ms(self.sum / self.count if self.count else None),
        }


class WindowedHistogram:
    """All-time histogram plus one for the last `slots` x `slot_seconds` (a ring)."""

    def __init__(
        self,
        slot_seconds: float = 60.0,
        slots: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = LogHistogram()
        self._slot_seconds = slot_seconds
        self._ring: list[tuple[int, LogHistogram]] = []
        self._slots = slots
        self._clock = clock

    @property
    def window_seconds(self) -> float:
        return self._slot_seconds * self._slots

    def observe(self, seconds: float) -> None:
        self.total.observe(seconds)
        slot = int(self._clock() // self._slot_seconds)
        if not self._ring or self._ring[-1][0] != slot:
            self._ring.append((slot, LogHistogram()))
            del self._ring[: -self._slots]
        self._ring[-1][1].observe(seconds)

    def recent(self) -> LogHistogram:
        oldest = int(self._clock() // self._slot_seconds) - self._slots + 1
        merged = LogHistogram()
        for slot, hist in self._ring:
            if slot >= oldest:
                merged.merge(hist)
        return merged


@dataclass
class RouteStats:
    """Requests of one (route template, method)."""

    latency: WindowedHistogram = field(default_factory=WindowedHistogram)
    requests: int = 0
    errors: int = 0  # 5xx: the server's fault
    client_errors: int = 0  # 4xx

    def to_dict(self) -> dict[str, object]:
        recent = self.latency.recent()
        return {
            "count": self.requests,
            "errors": self.errors,
            "client_errors": self.client_errors,
            "error_rate": round(self.errors / self.requests, 6) if self.requests else 0.0,
            "latency_ms": _percentiles(self.latency.total),
            "recent_latency_ms": {
                **_percentiles(recent),
                "count": recent.count,
                "window_seconds": self.latency.window_seconds,
            },
        }


def _percentiles(hist: LogHistogram) -> dict[str, float | None]:
    s = hist.summary_ms()
    return {"p50": s["p50_ms"], "p95": s["p95_ms"], "p99": s["p99_ms"]}  # type: ignore[dict-item]


class HttpStats:
    """Per-route request statistics, bounded by the number of route templates."""

    #: Beyond this many (route, method) pairs everything new is counted as "<other>".
    MAX_SERIES = 500

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], RouteStats] = {}
        self.overall = RouteStats()

    def record(
        self,
        route: str,
        method: str,
        status: int,
        seconds: float | None,
        overall: bool = True,
        server_error: bool | None = None,
    ) -> None:
        """`overall=False` keeps a request out of the overview (the monitoring surface's
        own polling would otherwise drown the application's traffic). `server_error`
        defaults to status >= 500."""
        if server_error is None:
            server_error = status >= 500
        key = (route, method)
        stats = self.routes.get(key)
        if stats is None:
            if len(self.routes) >= self.MAX_SERIES:
                key = ("<other>", method)
            stats = self.routes.setdefault(key, RouteStats())
        for s in (stats, self.overall) if overall else (stats,):
            s.requests += 1
            if server_error:
                s.errors += 1
            elif status >= 400:
                s.client_errors += 1
            if seconds is not None:
                s.latency.observe(seconds)

    def endpoints(self) -> list[dict[str, object]]:
        rows = [
            {"route": route, "method": method, **stats.to_dict()}
            for (route, method), stats in self.routes.items()
        ]
        rows.sort(key=lambda r: (-int(r["count"]), r["route"], r["method"]))  # type: ignore[call-overload]
        return rows


class StageStats:
    """Voice-turn stage latencies; thread-safe because observers may report from executors."""

    MAX_STAGES = 16

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stages: dict[str, WindowedHistogram] = {}
        self.turns = WindowedHistogram()
        self.turns_by_mode: dict[str, int] = {}

    def record(
        self, stages: Iterable[tuple[str, float]], turn_seconds: float | None, mode: str
    ) -> None:
        with self._lock:
            for name, seconds in stages:
                hist = self.stages.get(name)
                if hist is None:
                    if len(self.stages) >= self.MAX_STAGES:
                        continue
                    hist = self.stages[name] = WindowedHistogram()
                hist.observe(seconds)
            if turn_seconds is not None:
                self.turns.observe(turn_seconds)
            self.turns_by_mode[mode] = self.turns_by_mode.get(mode, 0) + 1

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            stages = {}
            for name, hist in self.stages.items():
                recent = hist.recent()
                stages[name] = {
                    **_percentiles(hist.total),
                    "count": hist.total.count,
                    "recent": {**_percentiles(recent), "count": recent.count},
                }
            recent_turns = self.turns.recent()
            return {
                "turns": sum(self.turns_by_mode.values()),
                "turns_by_mode": dict(self.turns_by_mode),
                "turn_latency_ms": _percentiles(self.turns.total),
                "recent_turn_latency_ms": {
                    **_percentiles(recent_turns),
                    "count": recent_turns.count,
                    "window_seconds": self.turns.window_seconds,
                },
                "stages_ms": stages,
            }

"""Process and host resources, and event-loop lag, measured without blocking the loop.

psutil calls that walk /proc (connections, open files) can take milliseconds under load,
so a sample is taken in a worker thread and cached; the admin route serves the cached one
(at most `max_age` seconds old). Event-loop lag is how late a periodic `asyncio.sleep`
wakes up: the one number that shows "something is blocking the loop".
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from typing import Any

import psutil


class LoopLagMonitor:
    """Records how late each periodic wake-up was; keeps the last `keep` samples."""

    def __init__(self, interval: float = 0.5, keep: int = 120) -> None:
        self.interval = interval
        self.samples: deque[float] = deque(maxlen=keep)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.samples.append(max(0.0, loop.time() - expected))

    def snapshot(self) -> dict[str, float | int | None]:
        values = list(self.samples)
        if not values:
            return {"current_ms": None, "max_ms": None, "mean_ms": None, "samples": 0}
        return {
            "current_ms": round(values[-1] * 1000.0, 3),
            "max_ms": round(max(values) * 1000.0, 3),
            "mean_ms": round(sum(values) / len(values) * 1000.0, 3),
            "samples": len(values),
            "window_seconds": round(len(values) * self.interval, 1),
        }


class SystemSampler:
    def __init__(self, max_age: float = 2.0) -> None:
        self._proc = psutil.Process(os.getpid())
        self._proc.cpu_percent(None)  # the first call only primes the counter
        self._max_age = max_age
        self._last: dict[str, Any] | None = None
        self._last_at = 0.0
        self._lock = asyncio.Lock()

    def rss(self) -> int:
        """Resident memory in bytes: one read of /proc/self/statm, cheap enough for the loop."""
        try:
            return int(self._proc.memory_info().rss)
        except psutil.Error:
            return 0

    def _sample(self) -> dict[str, Any]:
        """Runs in a thread: every psutil call that may touch /proc is here."""
        proc = self._proc
        with proc.oneshot():
            mem = proc.memory_info()
            cpu = proc.cpu_percent(None)
            threads = proc.num_threads()
            try:
                fds: int | None = proc.num_fds()
            except (AttributeError, psutil.Error):  # not on Windows
                fds = None
            try:
                conns = proc.net_connections(kind="inet")
                established = sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED)
                listening = sum(1 for c in conns if c.status == psutil.CONN_LISTEN)
                total_conns: int | None = len(conns)
            except psutil.Error:
                established = listening = 0
                total_conns = None
            created = proc.create_time()
        vm = psutil.virtual_memory()
        return {
            "pid": proc.pid,
            "cpu_percent": round(cpu, 1),
            "cpu_count": psutil.cpu_count() or 1,
            "load_average": [round(x, 2) for x in os.getloadavg()]
            if hasattr(os, "getloadavg")
            else None,
            "memory": {
                "rss_bytes": mem.rss,
                "rss_mb": round(mem.rss / 1048576, 1),
                "system_total_bytes": vm.total,
                "system_available_bytes": vm.available,
                "system_percent": vm.percent,
            },
            "open_fds": fds,
            "threads": threads,
            "connections": {
                "total": total_conns,
                "established": established,
                "listening": listening,
            },
            "process_uptime_seconds": round(time.time() - created, 1),
        }

    async def sample(self) -> dict[str, Any]:
        """A fresh-enough sample; concurrent callers share one thread hop."""
        async with self._lock:
            now = time.monotonic()
            if self._last is None or now - self._last_at > self._max_age:
                self._last = await asyncio.to_thread(self._sample)
                self._last_at = time.monotonic()
            return {**self._last, "sample_age_seconds": round(time.monotonic() - self._last_at, 2)}

"""AdminHub: the one object the server wires in for the operator surface.

How the app factory uses it (`server` -> `admin`, never the other way)::

    hub = AdminHub.from_settings(settings)   # or AdminHub(admin_api_key=..., metrics_token=...,
                                             #              redis_url=..., maintenance_key=...)
    app = web.Application(middlewares=[hub.middleware, ...])   # first: sees everything
    app[ADMIN] = hub
    hub.install(app)   # routes (/admin/, /admin/api/..., /metrics), X-Request-ID, lifecycle
    hub.add_health_check("database", store.ping)     # async () -> bool | dict, 2 s timeout
    hub.add_health_check("capture_writer", admin.checks.capture_writer_check(writer),
                         critical=False)             # non-critical: degraded, not unhealthy
    hub.add_health_check("providers", admin.checks.providers_check(providers, ready),
                         critical=False)
    hub.add_gauge_source("capture_queue_depth", lambda: writer.depth)   # () -> number
    hub.add_gauge_source("capture_journal_backlog", lambda: writer.journal_backlog)
    hub.add_gauge_source("capture_dropped", lambda: writer.dropped)   # a running total

    # the server's session lifecycle takes the hub as its gate and session watcher
    # (WebSocket connections are counted by the middleware itself, which also puts the
    # route's {session_id} into every log line of the session):
    hub.refusal()            # "maintenance" while maintenance mode is on, else None
    hub.session_opened(); Session(..., observer=hub.observer); ...; hub.session_closed()

`hub.observer` implements `pipelines.ports.SessionObserver` (turn stage latencies, provider
errors and fallbacks, VAD/STT/TTS work time). The in-process numbers behind the admin
JSON API are per worker (each response says `"scope": "process"` and its pid); `/metrics`
is summed over all workers when `PROMETHEUS_MULTIPROC_DIR` is set.

For alerting the hub also runs every health check every `health_interval` seconds and
exports the results (`admin.health_metrics`), and samples its resident memory each second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from admin.auth import FailureLimiter, keys_match
from admin.context import request_id_var
from admin.errors import ErrorLog, ErrorRecord
from admin.fleet import MONITORING_ROUTES, fleet_summary
from admin.health import DEGRADED, HEALTHY, HealthRegistry
from admin.health_metrics import HealthExporter
from admin.maintenance import (
    FileBackend,
    Maintenance,
    MaintenanceBackend,
    MemoryBackend,
    RedisBackend,
)
from admin.middleware import add_request_id_header, make_middleware
from admin.observer import HubObserver
from admin.prom import CounterFeed, LabelGuard, PromMetrics, multiproc_dir
from admin.routes import AdminApi
from admin.stats import HttpStats, StageStats
from admin.system import LoopLagMonitor, SystemSampler

log = logging.getLogger("admin")

#: Gauges fed by `add_gauge_source`, by name.
GAUGE_SOURCES = (
    "capture_queue_depth",
    "capture_journal_backlog",
    "capture_dropped",
    "trace_spans_dropped",
)
#: Sources that report a running total: they feed a counter, not a gauge.
_TOTALS = frozenset({"capture_dropped", "trace_spans_dropped"})


class AdminHub:
    def __init__(
        self,
        *,
        admin_api_key: str = "",
        metrics_token: str = "",
        redis_url: str = "",
        maintenance_key: str = "lva:maintenance",
        shared_dir: str | None = None,
        maintenance_backend: MaintenanceBackend | None = None,
        registry: CollectorRegistry | None = None,
        auth_max_failures: int = 10,
        auth_window_seconds: float = 60.0,
        sync_interval: float = 1.0,
        health_interval: float = 5.0,
    ) -> None:
        self.admin_api_key = admin_api_key
        self.metrics_token = metrics_token
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self.prom = PromMetrics(registry)
        self.http = HttpStats()
        self.stages = StageStats()
        self.errors = ErrorLog()
        self.health = HealthRegistry()
        self.system = SystemSampler()
        self.loop_lag = LoopLagMonitor()
        #: Wrong admin keys and wrong metrics tokens are limited apart (admin/auth.py).
        self.auth_limiter = FailureLimiter(auth_max_failures, auth_window_seconds)
        self.metrics_limiter = FailureLimiter(auth_max_failures, auth_window_seconds)
        self.maintenance = Maintenance(
            maintenance_backend
            or _backend(redis_url, maintenance_key, shared_dir or multiproc_dir())
        )
        self.labels = LabelGuard()
        self.observer = HubObserver(self.stages, self.prom, self.errors, self.labels)
        self.health_metrics = HealthExporter(self.prom, self.labels)
        self._health_interval = health_interval
        self._totals = {name: CounterFeed(getattr(self.prom, name)) for name in _TOTALS}
        self.middleware = make_middleware(self)
        self.api = AdminApi(self)
        self.routes = self.api.routes()
        self._sync_interval = sync_interval
        self._gauge_sources: dict[str, Callable[[], float | int]] = {}
        self._gauge_values: dict[str, float | None] = {}
        self._gauge_failed: set[str] = set()
        self.active_sessions = 0
        self.sessions_total = 0
        self.active_websockets = 0
        self.websockets_total = 0
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> AdminHub:
        """From the server's `Settings` (read by attribute: `admin` never imports `server`)."""
        kwargs: dict[str, Any] = {
            "admin_api_key": getattr(settings, "admin_api_key", ""),
            "metrics_token": getattr(settings, "metrics_token", ""),
            "redis_url": getattr(settings, "redis_url", ""),
            "auth_max_failures": getattr(settings, "admin_max_failures", 10),
            # Same prefix as the session keys, so test runs and tenants never share a switch.
            "maintenance_key": f"{getattr(settings, 'redis_key_prefix', '')}lva:maintenance",
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    # --- wiring ----------------------------------------------------------------------
    def install(self, app: web.Application) -> None:
        """Routes, the X-Request-ID header on every response, and start/stop with the app.
        (The middleware must be given to `web.Application(middlewares=[hub.middleware])`.)"""
        app.add_routes(self.routes)
        app.on_response_prepare.append(add_request_id_header)
        app.cleanup_ctx.append(self.cleanup_ctx)

    def add_health_check(
        self,
        name: str,
        fn: Callable[[], Awaitable[bool | dict[str, Any]]],
        *,
        critical: bool = True,
        timeout: float = 2.0,
    ) -> None:
        """Register a dependency check (see `admin.health` for what it may return).
        A non-critical check failing makes the service degraded, not unhealthy."""
        self.health.add(name, fn, critical=critical, timeout=timeout)

    def add_gauge_source(self, name: str, fn: Callable[[], float | int]) -> None:
        """A cheap synchronous reading (e.g. `queue.qsize`), sampled about once a second.
        `capture_dropped` and `trace_spans_dropped` are running totals (captures and turn
        spans lost so far): they feed counters."""
        if name not in GAUGE_SOURCES:
            raise ValueError(f"unknown gauge {name!r}; expected one of {GAUGE_SOURCES}")
        self._gauge_sources[name] = fn

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        await self.maintenance.refresh()
        self.prom.maintenance.set(1 if self.maintenance.enabled else 0)
        self._tasks = [
            asyncio.create_task(self.loop_lag.run(), name="admin-loop-lag"),
            asyncio.create_task(self._sync_forever(), name="admin-sync"),
            asyncio.create_task(self._health_forever(), name="admin-health"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        with contextlib.suppress(Exception):
            await self.maintenance.backend.close()
        self.prom.process_exited()

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await self.start()
        yield
        await self.stop()

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sync_interval)
            await self.maintenance.refresh()
            self.prom.maintenance.set(1 if self.maintenance.enabled else 0)
            if self.loop_lag.samples:
                self.prom.loop_lag.set(self.loop_lag.samples[-1])
            rss = self.system.rss()
            if rss:
                self.prom.resident_memory.set(rss)
            self.sample_gauges()

    async def _health_forever(self) -> None:
        """Every health check, now and then every `health_interval` seconds, as gauges."""
        while True:
            try:
                await self.sample_health()
            except Exception:  # a broken check must not end the sampling for good
                log.exception("health sampling failed")
            await asyncio.sleep(self._health_interval)

    async def sample_health(self) -> dict[str, Any]:
        report = await self.health.run()
        self.health_metrics.export(report)
        return report

    def sample_gauges(self) -> None:
        for name, fn in self._gauge_sources.items():
            try:
                value = float(fn())
                if not math.isfinite(value):
                    raise ValueError(f"not a finite number: {value}")
            except Exception as exc:
                if name not in self._gauge_failed:
                    log.warning("gauge source %s failed: %r", name, exc)
                    self._gauge_failed.add(name)
                self._gauge_values[name] = None
                continue
            self._gauge_failed.discard(name)
            self._gauge_values[name] = value
            if name in self._totals:
                self._totals[name].update(value)
            else:
                getattr(self.prom, name).set(value)

    # --- sessions and sockets ----------------------------------------------------------
    def refusal(self) -> str | None:
        """The session lifecycle's gate: no new sessions during maintenance."""
        return "maintenance" if self.maintenance.enabled else None

    def session_opened(self) -> None:
        self.active_sessions += 1
        self.sessions_total += 1
        self.prom.voice_sessions.inc()

    def session_closed(self) -> None:
        self.active_sessions = max(0, self.active_sessions - 1)
        self.prom.voice_sessions.dec()

    def data_deleted(self, kind: str, captures: int) -> None:
        """A learner's data was deleted (`kind`: session, learner or retention)."""
        if kind not in ("session", "learner", "retention"):
            kind = "other"
        if kind != "retention" or captures:
            self.prom.deletions.labels(kind).inc()
        self.prom.captures_deleted.labels(kind).inc(max(0, captures))

    def ws_opened(self) -> None:
        """Called by the middleware for every WebSocket upgrade request."""
        self.active_websockets += 1
        self.websockets_total += 1
        self.prom.ws_sessions.inc()

    def ws_closed(self) -> None:
        self.active_websockets = max(0, self.active_websockets - 1)
        self.prom.ws_sessions.dec()

    def is_operator(self, request: web.Request) -> bool:
        """The request carries the right admin key or metrics token (checked in constant
        time; a wrong one is not counted here: the route's own check does that)."""
        key = request.headers.get("X-Admin-Key")
        if key is not None and keys_match(self.admin_api_key, key):
            return True
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        return bool(self.metrics_token) and keys_match(self.metrics_token, token)

    def count_limited(self, limit: str) -> None:
        """A request, connection or message refused by a limit (a fixed set of names)."""
        self.prom.limited.labels(self.labels("limit", limit)).inc()

    # --- recording (called by the middleware) ----------------------------------------
    def record_request(
        self,
        route: str,
        method: str,
        status: int,
        seconds: float,
        code: str,
        deliberate: bool = False,
    ) -> None:
        """`deliberate`: a 503 the server chose to send with `Retry-After` (maintenance,
        models still loading, full): reported to clients, counted per status, but not an
        error of the server and not in the error rate or the recent errors."""
        # A WebSocket's "request" lasts the whole conversation: counted, not timed.
        timed = None if status == 101 else seconds
        monitoring = route.startswith(MONITORING_ROUTES)
        server_error = status >= 500 and not deliberate
        self.http.record(
            route, method, status, timed, overall=not monitoring, server_error=server_error
        )
        self.prom.http_requests.labels(route, method, str(status)).inc()
        if server_error:
            self.prom.http_server_errors.labels(route, method).inc()
        if timed is not None:
            self.prom.http_duration.labels(route, method).observe(timed)
        if server_error:
            self.errors.add(
                ErrorRecord(
                    time=time.time(),
                    kind="http",
                    route=route,
                    method=method,
                    status=status,
                    code=code or "http_error",
                    message=f"{method} {route} answered {status}",
                    request_id=request_id_var.get(),
                    session_id=None,
                )
            )

    # --- reports ---------------------------------------------------------------------
    def uptime(self) -> float:
        return time.monotonic() - self._started_mono

    def overview(self) -> dict[str, Any]:
        self.sample_gauges()
        overall = self.http.overall
        return {
            "scope": "process",
            "pid": os.getpid(),
            "timestamp": time.time(),
            "uptime_seconds": round(self.uptime(), 1),
            "requests": {"total": overall.requests, **_without(overall.to_dict(), "count")},
            "sessions": {"active": self.active_sessions, "total": self.sessions_total},
            "websockets": {"active": self.active_websockets, "total": self.websockets_total},
            "voice": self.stages.snapshot(),
            "providers": {
                "errors": self.observer.provider_error_count,
                "fallbacks": self.observer.fallback_count,
                "first_output_ms": self.observer.provider_latencies(),
            },
            "capture": {k: v for k, v in self._gauge_values.items() if k.startswith("capture_")},
            "traces": {k: v for k, v in self._gauge_values.items() if k.startswith("trace_")},
            "maintenance": self.maintenance.to_dict(),
        }

    async def fleet(self) -> dict[str, Any] | None:
        """All workers together (multiprocess mode only), read from the shared metric files
        in a thread: reading every worker's file is disk I/O."""
        if not self.prom.multiproc_dir:
            return None
        return await asyncio.to_thread(fleet_summary, self.prom.multiproc_dir)

    async def health_report(self) -> dict[str, Any]:
        report = await self.sample_health()
        report["maintenance"] = self.maintenance.to_dict()
        if self.maintenance.enabled:
            report["reasons"].append(f"maintenance mode is on: {self.maintenance.message}")
            if report["status"] == HEALTHY:
                report["status"] = DEGRADED
        if self.maintenance.last_sync_error:
            report["reasons"].append("maintenance state could not be synchronised")
            if report["status"] == HEALTHY:
                report["status"] = DEGRADED
        report["uptime_seconds"] = round(self.uptime(), 1)
        report["timestamp"] = time.time()
        report["pid"] = os.getpid()
        return report


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


def _backend(redis_url: str, key: str, shared_dir: str | None) -> MaintenanceBackend:
    if redis_url:
        return RedisBackend(redis_url, key=key)
    if shared_dir:
        return FileBackend(Path(shared_dir) / "maintenance.json")
    return MemoryBackend()

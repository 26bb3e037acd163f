"""Prometheus metric definitions and the `/metrics` exposition.

Names follow the conventions (`lva_` prefix, base units, `_total` for counters,
`_seconds` for durations) and every label is bounded: routes are templates, statuses are
numbers, provider/stage/kind values are cleaned and capped (`label`).

Several worker processes: when `PROMETHEUS_MULTIPROC_DIR` is set *before prometheus_client
is first imported* (the CLI does this for `--workers N`), every process writes its values to
files in that directory and `/metrics` sums them with `MultiProcessCollector`, whichever
worker answers the scrape. Gauges say how they combine (`multiprocess_mode`): live sessions
and queue depths add up over live processes; lag is the worst live process.
"""

from __future__ import annotations

import os
import re

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as prom_mp

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
VOICE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LABEL_RE = re.compile(r"[^a-z0-9_]+")
_MAX_VALUES_PER_LABEL = 32


def multiproc_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


class LabelGuard:
    """Cleans free-form label values and caps how many distinct ones a label may take."""

    def __init__(self, cap: int = _MAX_VALUES_PER_LABEL) -> None:
        self._cap = cap
        self._seen: dict[str, set[str]] = {}

    def __call__(self, label: str, value: str) -> str:
        clean = _LABEL_RE.sub("_", str(value).strip().lower())[:40].strip("_") or "unknown"
        seen = self._seen.setdefault(label, set())
        if clean in seen:
            return clean
        if len(seen) >= self._cap:
            return "other"
        seen.add(clean)
        return clean


class CounterFeed:
    """Feeds a counter from a running total read elsewhere (e.g. `writer.dropped`): each
    reading adds what the total grew by; a total that went down started again from 0."""

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._last = 0.0

    def update(self, total: float) -> None:
        grown = total - self._last if total >= self._last else total
        self._last = total
        if grown > 0:
            self._counter.inc(grown)


class PromMetrics:
    """All of the server's Prometheus series, in one registry per hub (tests make many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.multiproc_dir = multiproc_dir()
        # `*_created` series double the exposition and nobody graphs them.
        disable_created_metrics()
        self.registry = registry or CollectorRegistry()
        if not self.multiproc_dir:
            # process_cpu_seconds_total, process_resident_memory_bytes, ...: per process only.
            ProcessCollector(registry=self.registry)
        r = self.registry
        self.http_requests = Counter(
            "lva_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "lva_http_request_duration_seconds",
            "HTTP request duration by route template.",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.ws_sessions = Gauge(
            "lva_websocket_sessions",
            "Open WebSocket connections.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.voice_sessions = Gauge(
            "lva_voice_sessions",
            "Live voice sessions (browser and phone).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.voice_turns = Counter(
            "lva_voice_turns", "Finished conversation turns by mode.", ["mode"], registry=r
        )
        self.voice_stage = Histogram(
            "lva_voice_stage_seconds",
            "Time from the end of the user's speech to each stage of the reply.",
            ["stage"],
            buckets=VOICE_BUCKETS,
            registry=r,
        )
        self.provider_errors = Counter(
            "lva_provider_errors",
            "Provider failures by stage, provider and kind.",
            ["stage", "provider", "kind"],
            registry=r,
        )
        self.provider_fallbacks = Counter(
            "lva_provider_fallbacks",
            "Switches to the next provider of a chain.",
            ["stage", "from_provider", "to_provider"],
            registry=r,
        )
        self.provider_first_output = Histogram(
            "lva_provider_first_output_seconds",
            "Time from request to a provider's first output (transcript, token, audio).",
            ["stage", "provider"],
            buckets=VOICE_BUCKETS,
            registry=r,
        )
        self.work_seconds = Counter(
            "lva_work_seconds",
            "CPU-bound work time (vad, stt, tts) in seconds.",
            ["stage"],
            registry=r,
        )
        self.audio_dropped_seconds = Counter(
            "lva_audio_dropped_seconds",
            "Client audio dropped for arriving faster than AUDIO_MAX_SPEED x real time.",
            registry=r,
        )
        self.capture_queue_depth = Gauge(
            "lva_capture_queue_depth",
            "Captures waiting in memory to be written.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.capture_journal_backlog = Gauge(
            "lva_capture_journal_backlog",
            "Captures spilled to the on-disk journal, unwritten.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.loop_lag = Gauge(
            "lva_event_loop_lag_seconds",
            "Latest event-loop wake-up delay.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.maintenance = Gauge(
            "lva_maintenance_mode",
            "1 while maintenance mode is on.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.auth_failures = Counter(
            "lva_admin_auth_failures", "Rejected admin key or metrics token attempts.", registry=r
        )
        self.limited = Counter(
            "lva_limited",
            "Requests, connections and messages refused or dropped by a limit, by limit "
            "(docs/security.md#limits).",
            ["limit"],
            registry=r,
        )
        self.deletions = Counter(
            "lva_data_deletions",
            "Deletions of learners' data, by kind (session, learner, retention).",
            ["kind"],
            registry=r,
        )
        self.captures_deleted = Counter(
            "lva_captures_deleted",
            "Captures deleted, by kind of deletion (session, learner, retention).",
            ["kind"],
            registry=r,
        )
        # --- for alerting: failures the server did not choose, dependencies, resources ---
        self.http_server_errors = Counter(
            "lva_http_server_errors",
            "5xx answers that were failures (deliberate 503s with Retry-After left out).",
            ["route", "method"],
            registry=r,
        )
        self.health_check_up = Gauge(
            "lva_health_check_up",
            "1 while a health check answers healthy or degraded, 0 while it fails (worst worker).",
            ["check"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.provider_circuit_open = Gauge(
            "lva_provider_circuit_open",
            "1 while a provider's circuit breaker is open or half-open (any worker).",
            ["stage", "provider"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.stage_providers_available = Gauge(
            "lva_stage_providers_available",
            "Providers of a stage whose circuit is not open (worst worker).",
            ["stage"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.resident_memory = Gauge(
            "lva_process_resident_memory_bytes",
            "Resident memory of the process (the largest live worker).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.capture_dropped = Counter(
            "lva_capture_dropped",
            "Captures lost: the memory queue and the disk journal were both full.",
            registry=r,
        )
        self.trace_spans_dropped = Counter(
            "lva_trace_spans_dropped",
            "Turn spans lost (tracing on): export too far behind, or the collector failing.",
            registry=r,
        )

    def exposition(self) -> bytes:
        """The text format, summed over all workers in multiprocess mode."""
        if self.multiproc_dir:
            registry = CollectorRegistry()
            prom_mp.MultiProcessCollector(registry, path=self.multiproc_dir)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def process_exited(self) -> None:
        """Drop this process's live gauges from the shared directory (multiprocess only)."""
        if self.multiproc_dir:
            prom_mp.mark_process_dead(os.getpid(), self.multiproc_dir)

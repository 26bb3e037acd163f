"""The `SessionObserver` a voice Session reports to (see `pipelines.ports`).

Implemented structurally, so `pipelines` never imports `admin`. Calls may come from the
event loop or from executor threads (work time measured around a model call), so
everything here is thread-safe and cheap; bad values (negative, NaN, absurd) are dropped
rather than poisoning a histogram.
"""

from __future__ import annotations

import math
import threading
import time

from admin.context import request_id_var, session_id_var
from admin.errors import ErrorLog, ErrorRecord
from admin.prom import LabelGuard, PromMetrics
from admin.stats import StageStats, WindowedHistogram

#: The stage that best answers "how long until the user hears the reply", in order.
TURN_LATENCY_STAGES = ("first_audio", "llm_first_token", "stt_final")
_MAX_STAGE_SECONDS = 600.0
_MODES = frozenset({"continuous", "push_to_talk", "text", "phone"})
#: (stage, provider) series kept for the admin JSON (labels are capped too).
_MAX_PROVIDER_SERIES = 32


def _valid(seconds: object) -> bool:
    return (
        isinstance(seconds, int | float)
        and math.isfinite(seconds)
        and 0.0 <= seconds <= _MAX_STAGE_SECONDS
    )


class HubObserver:
    def __init__(
        self, stages: StageStats, prom: PromMetrics, errors: ErrorLog, labels: LabelGuard
    ) -> None:
        self._stages = stages
        self._prom = prom
        self._errors = errors
        self._labels = labels
        self.provider_error_count = 0
        self.fallback_count = 0
        self._latency_lock = threading.Lock()
        self._provider_latency: dict[tuple[str, str], WindowedHistogram] = {}

    def turn_completed(self, stages: dict[str, float], mode: str) -> None:
        """`stages`: seconds from the end of the user's speech to each stage of the reply."""
        clean = [(self._labels("stage", name), float(v)) for name, v in stages.items() if _valid(v)]
        mode = mode if mode in _MODES else "other"
        by_name = dict(clean)
        turn = next((by_name[s] for s in TURN_LATENCY_STAGES if s in by_name), None)
        if turn is None and by_name:
            turn = max(by_name.values())
        self._stages.record(clean, turn, mode)
        self._prom.voice_turns.labels(mode).inc()
        for name, seconds in clean:
            self._prom.voice_stage.labels(name).observe(seconds)

    def provider_error(self, stage: str, provider: str, kind: str) -> None:
        stage_l = self._labels("stage", stage)
        provider_l = self._labels("provider", provider)
        kind_l = self._labels("kind", kind)
        self.provider_error_count += 1
        self._prom.provider_errors.labels(stage_l, provider_l, kind_l).inc()
        self._errors.add(
            ErrorRecord(
                time=time.time(),
                kind="provider",
                route=f"voice:{stage_l}",
                method="",
                status=0,
                code=kind_l,
                message=f"{provider_l} failed during {stage_l}",
                request_id=request_id_var.get(),
                session_id=session_id_var.get(),
            )
        )

    def provider_fallback(self, stage: str, from_provider: str, to_provider: str) -> None:
        self.fallback_count += 1
        self._prom.provider_fallbacks.labels(
            self._labels("stage", stage),
            self._labels("provider", from_provider),
            self._labels("provider", to_provider),
        ).inc()

    def provider_latency(self, stage: str, provider: str, seconds: float) -> None:
        """First-output latency of the provider that served a stage (chains report it)."""
        if _valid(seconds):
            key = (self._labels("stage", stage), self._labels("provider", provider))
            self._prom.provider_first_output.labels(*key).observe(float(seconds))
            with self._latency_lock:
                hist = self._provider_latency.get(key)
                if hist is None and len(self._provider_latency) < _MAX_PROVIDER_SERIES:
                    hist = self._provider_latency[key] = WindowedHistogram()
                if hist is not None:
                    hist.observe(float(seconds))

    def provider_latencies(self) -> dict[str, dict[str, dict[str, float | int | None]]]:
        """First-output latency per stage and provider (all time), for the admin JSON."""
        out: dict[str, dict[str, dict[str, float | int | None]]] = {}
        with self._latency_lock:
            for (stage, provider), hist in sorted(self._provider_latency.items()):
                out.setdefault(stage, {})[provider] = hist.total.summary_ms()
        return out

    def work_time(self, stage: str, seconds: float) -> None:
        if _valid(seconds):
            self._prom.work_seconds.labels(self._labels("stage", stage)).inc(float(seconds))

    def audio_dropped(self, seconds: float) -> None:
        """Audio a client sent faster than real time allows (no per-session label: the
        session's log line names it)."""
        if isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0:
            self._prom.audio_dropped_seconds.inc(float(seconds))

    def turn_finished(self, turn: object) -> None:
        """A finished turn's stage times (a `TurnTrace`): traces are the tracer's
        (server/tracing.py, when on); the metrics came from `turn_completed`."""

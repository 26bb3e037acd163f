"""The Session observer that turns each finished turn into spans (server/turn_spans.py
plans them; this emits them with their real start and end times). Everything else an
observer hears is the metrics' business and is ignored here.

Loaded only when tracing is on (server/tracing.py): it imports OpenTelemetry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from opentelemetry.context import Context
from opentelemetry.trace import Tracer, set_span_in_context

from admin.context import request_id_var
from pipelines.ports import TurnTrace
from server.turn_spans import PlannedSpan, plan_turn

log = logging.getLogger(__name__)

#: No parent: every turn is the root of its own trace.
_ROOT = Context()


class TurnTracer:
    def __init__(self, tracer: Tracer, admit: Callable[[int], bool]) -> None:
        """`admit(n)`: whether n more spans may be queued for export (False: dropped)."""
        self._tracer = tracer
        self._admit = admit
        self._failed = False

    def turn_finished(self, turn: TurnTrace) -> None:
        try:
            # Called in the session's tasks, which carry the connection's request id.
            root, stages = plan_turn(turn, request_id_var.get())
            if self._admit(1 + len(stages)):
                self._emit(root, stages)
        except Exception:  # a trace is never worth a turn
            if not self._failed:
                self._failed = True
                log.exception("turn trace failed", extra={"session_id": turn.session_id})

    def _emit(self, root: PlannedSpan, stages: list[PlannedSpan]) -> None:
        tracer = self._tracer
        turn = tracer.start_span(
            root.name, _ROOT, attributes=root.attributes, start_time=root.start_ns
        )
        parent = set_span_in_context(turn, _ROOT)
        for stage in stages:
            span = tracer.start_span(
                stage.name, parent, attributes=stage.attributes, start_time=stage.start_ns
            )
            for event, at in stage.events:
                span.add_event(event, timestamp=at)
            span.end(stage.end_ns)
        turn.end(root.end_ns)

    # The rest of `SessionObserver`: metrics, not traces.
    def turn_completed(self, stages: dict[str, float], mode: str) -> None:
        pass

    def provider_error(self, stage: str, provider: str, kind: str) -> None:
        pass

    def provider_fallback(self, stage: str, from_provider: str, to_provider: str) -> None:
        pass

    def provider_latency(self, stage: str, provider: str, seconds: float) -> None:
        pass

    def work_time(self, stage: str, seconds: float) -> None:
        pass

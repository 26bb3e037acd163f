"""The Session observer that turns each finished turn into spans: server/turn_spans.py
plans them, this makes them the SDK's finished spans and hands them to the export
processor. Everything else an observer hears is the metrics' business and is ignored.

The spans of a turn are records of what already happened, with known start and end
times, so they are made as finished spans (`ReadableSpan`, what the Tracer API hands its
processors when a span ends) rather than started and ended through the Tracer API: a live
span carries locks, limits, a per-span sampling decision and its context, which made a
turn's seven spans cost twice the CPU and three times the garbage-collector work. The
SDK's configuration still decides: its sampler (OTEL_TRACES_SAMPLER, once per turn), id
generator and resource.

Loaded only when tracing is on (server/tracing.py): it imports OpenTelemetry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from admin.context import request_id_var
from pipelines.ports import NullObserver, TurnTrace
from server.turn_spans import PlannedSpan, plan_turn

log = logging.getLogger(__name__)

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class TurnTracer(NullObserver):
    """A `SessionObserver` that only traces (the metrics are the hub's): the rest of the
    interface is NullObserver's."""

    def __init__(
        self,
        config: TracerProvider,
        scope: InstrumentationScope,
        admit: Callable[[int], bool],
        submit: Callable[[ReadableSpan], None],
    ) -> None:
        """`config`: the SDK's sampler, id generator and resource; `admit(n)`: whether n
        more spans may be queued for export (False: they are dropped); `submit`: queue one
        finished span for export."""
        self._sampler = config.sampler
        self._ids = config.id_generator
        self._resource = config.resource
        self._scope = scope
        self._admit = admit
        self._submit = submit
        self._failed = False

    def turn_finished(self, turn: TurnTrace) -> None:
        try:
            # Called in the session's tasks, which carry the connection's request id.
            root, stages = plan_turn(turn, request_id_var.get())
            self._emit(root, stages)
        except Exception:  # a trace is never worth a turn
            if not self._failed:
                self._failed = True
                log.exception("turn trace failed", extra={"session_id": turn.session_id})

    def _emit(self, root: PlannedSpan, stages: list[PlannedSpan]) -> None:
        ids = self._ids
        trace_id = ids.generate_trace_id()
        sampling = self._sampler.should_sample(
            None, trace_id, root.name, SpanKind.INTERNAL, root.attributes
        )
        if not sampling.decision.is_sampled() or not self._admit(1 + len(stages)):
            return
        state = sampling.trace_state
        parent = SpanContext(trace_id, ids.generate_span_id(), False, _SAMPLED, state)
        for stage in stages:
            context = SpanContext(trace_id, ids.generate_span_id(), False, _SAMPLED, state)
            self._submit(self._span(stage, context, parent))
        attributes = {**sampling.attributes, **root.attributes}
        self._submit(self._span(root, parent, None, attributes))

    def _span(
        self,
        plan: PlannedSpan,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, object] | None = None,
    ) -> ReadableSpan:
        return ReadableSpan(
            plan.name,
            context,
            parent,
            self._resource,
            attributes if attributes is not None else plan.attributes,  # type: ignore[arg-type]
            [Event(name, None, at) for name, at in plan.events],
            kind=SpanKind.INTERNAL,
            start_time=plan.start_ns,
            end_time=plan.end_ns,
            instrumentation_scope=self._scope,
        )

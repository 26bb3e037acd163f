"""The OpenTelemetry SDK set up for turn traces: the SDK's configuration (sampler, ids,
resource) in a tracer provider of our own, never installed as the global one (so libraries
that trace through the global provider, such as the Anthropic SDK with its request
bodies, stay silent), a `BatchSpanProcessor` exporting from its own thread, and a bound on
what may wait for export.

Spans are admitted to the export queue only while fewer than `max_queue` are waiting
(queued and not yet through the exporter): past that a turn's spans are not even built,
and they are counted as dropped, as are spans the exporter failed to deliver. The event
loop never waits for the collector.

Loaded only when tracing is on (server/tracing.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from server.turn_tracer import TurnTracer

log = logging.getLogger(__name__)

#: Instrumentation scope of the turn spans.
SCOPE = "learning-voice-agent.voice"
#: Spans that may wait for export (about 580 turns); the SDK's default is 2048.
MAX_QUEUE = 4096
#: Spans encoded per export request: the encoding holds the interpreter lock, and small
#: batches keep that under a millisecond or two, so the event loop never waits long for it.
BATCH = 128


class CountingExporter(SpanExporter):
    """Counts the spans that went through the exporter and those it failed to deliver
    (runs in the batch processor's thread; the loop only reads the counts)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.done = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            log.exception("span export failed")
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.failed += len(spans)
        self.done += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class OtelTracing:
    def __init__(
        self,
        exporter: SpanExporter,
        service_name: str,
        *,
        max_queue: int = MAX_QUEUE,
        schedule_delay_ms: float | None = None,
    ) -> None:
        self._exporter = CountingExporter(exporter)
        self._max_queue = max_queue
        self._queued = 0
        self._dropped = 0
        # The SDK's sampler (OTEL_TRACES_SAMPLER; default: every turn), ids and resource.
        resource = Resource.create({SERVICE_NAME: service_name})
        config = TracerProvider(resource=resource, shutdown_on_exit=False)
        self._processor = BatchSpanProcessor(
            self._exporter,
            max_queue_size=max_queue,
            schedule_delay_millis=schedule_delay_ms,
            max_export_batch_size=min(BATCH, max_queue),
        )
        #: The Session observer that traces turns (composed with the metrics' observer).
        self.observer = TurnTracer(
            config, InstrumentationScope(SCOPE), self._admit, self._processor.on_end
        )

    @property
    def spans_dropped(self) -> int:
        """Spans lost so far: not admitted (export too far behind) or not delivered."""
        return self._dropped + self._exporter.failed

    @property
    def spans_exported(self) -> int:
        return self._exporter.done - self._exporter.failed

    def _admit(self, n: int) -> bool:
        if self._queued - self._exporter.done + n > self._max_queue:
            if not self._dropped:
                log.warning("span export is behind: dropping turn traces (counted)")
            self._dropped += n
            return False
        self._queued += n
        return True

    async def flush(self) -> None:
        """Export what is queued (in a thread: the collector may be slow)."""
        await asyncio.to_thread(self._processor.force_flush)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._processor.shutdown)
        log.info(
            "traces closed",
            extra={"spans_exported": self.spans_exported, "spans_dropped": self.spans_dropped},
        )


def otlp_tracing(endpoint: str, service_name: str) -> OtelTracing:
    """Turn traces exported over OTLP/HTTP to `endpoint` (a collector's base URL). The
    exporter reads the standard OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT and _COMPRESSION."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OtelTracing(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"), service_name)

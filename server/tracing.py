"""Traces of every voice turn, on when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

Off (the default), nothing of OpenTelemetry is imported and a turn costs one no-op
observer call. On, the SDK is loaded here, once, at start-up (server/otel.py), and its
turn tracer joins the metrics' observer (server/observers.py): each finished turn
becomes a `voice.turn` span with one child per stage (server/turn_spans.py), built after
the turn from its clock marks, so the audio path is untouched.
"""

from __future__ import annotations

from typing import Protocol

from pipelines.ports import SessionObserver
from server.settings import ConfigError, Settings


class Tracing(Protocol):
    #: Traces finished turns; composed with the metrics' observer.
    observer: SessionObserver

    @property
    def spans_dropped(self) -> int:
        """Spans lost so far (export behind or failing): a running total."""
        ...

    async def flush(self) -> None: ...

    async def aclose(self) -> None:
        """Export what is left and stop."""
        ...


def start_tracing(settings: Settings) -> Tracing | None:
    """Tracing as the settings ask for it; None (and no SDK imported) when off."""
    if not settings.otel_exporter_otlp_endpoint:
        return None
    try:
        from server.otel import otlp_tracing
    except ImportError as exc:
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
            f"pip install '.[tracing]' ({exc})"
        ) from None
    return otlp_tracing(settings.otel_exporter_otlp_endpoint, settings.otel_service_name)

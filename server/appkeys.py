"""Typed application state (`web.AppKey`): everything a route handler may reach."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from admin.hub import AdminHub
    from server.engine import Engine
    from server.erasure import Erasure
    from server.identity.learners import Identity
    from server.limits.policy import Limits
    from server.settings import Settings
    from server.storage.factory import Storage
    from server.tracing import Tracing
    from server.transports.twilio_tokens import StreamGate

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
#: Sessions store, capture store and capture writer (see server/storage/factory.py).
STORAGE: web.AppKey[Storage] = web.AppKey("storage")
#: Providers, executor and live voice sessions (see server/engine.py).
ENGINE: web.AppKey[Engine] = web.AppKey("engine")
#: The admin/metrics hub: health, metrics, maintenance (the lifecycle's `Gate`).
ADMIN: web.AppKey[AdminHub] = web.AppKey("admin")
#: Learner credentials: issue, verify, forget (see server/identity/).
IDENTITY: web.AppKey[Identity] = web.AppKey("identity")
#: Deleting sessions and learners everywhere their words live (see server/erasure.py).
ERASURE: web.AppKey[Erasure] = web.AppKey("erasure")
#: Turn traces when OTEL_EXPORTER_OTLP_ENDPOINT is set, else None (see server/tracing.py).
TRACING: web.AppKey[Tracing | None] = web.AppKey("tracing")
#: What one client may use (see server/limits/ and docs/security.md#limits).
LIMITS: web.AppKey[Limits] = web.AppKey("limits")
#: Per-call phone stream tokens: issued by /twilio/voice, checked once by /twilio/stream.
STREAM_GATE: web.AppKey[StreamGate] = web.AppKey("stream_gate")

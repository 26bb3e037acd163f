"""The application factory: typed state, resource life cycles, routes.

Resources open in `cleanup_ctx` order (storage, then the engine) and close in reverse; on
shutdown every live connection is closed with 1001 first, so sessions record what they
have and the capture writer flushes before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from admin.checks import capture_writer_check, providers_check
from admin.hub import AdminHub
from pipelines.registry import Providers
from server import openapi
from server.appkeys import (
    ADMIN,
    ENGINE,
    ERASURE,
    IDENTITY,
    LIMITS,
    SETTINGS,
    STORAGE,
    STREAM_GATE,
    TRACING,
)
from server.engine import Engine
from server.erasure import Erasure, retention_loop
from server.http_errors import json_errors
from server.identity.admission import SessionAuthority
from server.identity.setup import build_identity
from server.limits.edge import ClientAddresses
from server.limits.middleware import client_address, request_limit
from server.limits.setup import build_limits
from server.observers import FanOut
from server.routes import admin_captures, captures, core, learners
from server.routes.core import STATIC_DIR
from server.settings import Settings
from server.storage.factory import close_storage, open_storage
from server.tracing import Tracing, start_tracing
from server.transports import webrtc
from server.transports.browser import ws_handler
from server.transports.twilio_tokens import KEY_PURPOSE, build_gate
from server.twilio import STREAM_PATH
from server.twilio import routes as _twilio_routes

log = logging.getLogger(__name__)


#: Routes whose WebSocket upgrades are voice connections (limited as connections).
VOICE_ROUTES = frozenset({"/ws/{session_id}", STREAM_PATH})


def create_app(
    settings: Settings,
    *,
    providers: Providers | None = None,
    tracing: Tracing | None = None,
) -> web.Application:
    """Build the app. `providers` replaces the configured ones (tests, benchmarks), and
    `tracing` the one OTEL_EXPORTER_OTLP_ENDPOINT would start (tests)."""
    hub = AdminHub.from_settings(settings)
    limits = build_limits(
        settings, settings.redis_url, settings.redis_key_prefix, hub.count_limited
    )
    app = web.Application(
        middlewares=[
            client_address(  # first: who is asking
                ClientAddresses(settings.trusted_proxies, settings.forwarded_header)
            ),
            hub.middleware,
            request_limit(limits, VOICE_ROUTES, hub.is_operator),
            json_errors,
        ],
        client_max_size=1024 * 1024,
    )
    app[SETTINGS] = settings
    app[ADMIN] = hub
    app[LIMITS] = limits

    async def limits_ctx(app: web.Application) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await limits.store.close()

    async def tracing_ctx(app: web.Application) -> AsyncIterator[None]:
        """Opened first and closed last: the turns recorded at shutdown are exported."""
        active = tracing if tracing is not None else start_tracing(settings)
        app[TRACING] = active
        if active is not None:
            hub.add_gauge_source("trace_spans_dropped", lambda: active.spans_dropped)
        try:
            yield
        finally:
            if active is not None:
                await active.aclose()

    async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
        storage = await open_storage(settings)
        app[STORAGE] = storage
        _watch_storage(hub, storage)
        app[IDENTITY] = build_identity(settings, storage.captures.is_forgotten)
        app[STREAM_GATE] = build_gate(
            app[IDENTITY].derived_key(KEY_PURPOSE),
            settings.twilio_stream_token_ttl_seconds,
            storage.sessions.client if settings.redis_url else None,
            settings.redis_key_prefix,
        )
        try:
            yield
        finally:
            await close_storage(storage)

    async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
        storage = app[STORAGE]
        traces = app[TRACING]
        engine = Engine(
            settings,
            storage.sessions,
            storage.writer,
            hub.observer if traces is None else FanOut(hub.observer, traces.observer),
            providers,
            gate=hub,
            watcher=hub,
            authority=SessionAuthority(app[IDENTITY], storage.captures, storage.sessions),
            limits=limits,
        )
        app[ENGINE] = engine
        app[ERASURE] = erasure = Erasure(storage, app[IDENTITY], engine.lifecycle, hub.data_deleted)
        retention = None
        if settings.capture_retention_days:
            retention = asyncio.create_task(
                retention_loop(erasure, settings.capture_retention_days)
            )
        engine.start()
        hub.add_health_check(
            "providers", providers_check(engine.providers, engine.ready), critical=False
        )
        try:
            yield
        finally:
            if retention is not None:
                retention.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retention
            await engine.close()

    app.cleanup_ctx.append(limits_ctx)
    app.cleanup_ctx.append(tracing_ctx)
    app.cleanup_ctx.append(storage_ctx)
    app.cleanup_ctx.append(engine_ctx)
    app.on_shutdown.append(_close_connections)

    app.add_routes(core.routes)
    app.add_routes(captures.routes)
    app.add_routes(learners.routes)
    admin_captures.add_routes(app)
    app.on_response_prepare.append(_private_by_default)
    app.router.add_get("/ws/{session_id}", ws_handler, name="ws")
    app.router.add_post("/api/webrtc/offer", webrtc.offer_handler, name="webrtc_offer")
    app.add_routes(_twilio_routes)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR, name="static", append_version=False)
    hub.install(app)
    openapi.add_routes(app)
    return app


def _watch_storage(hub: AdminHub, storage: Any) -> None:
    """Storage health checks and capture gauges for the admin hub."""
    hub.add_health_check("database", storage.captures.ping)
    hub.add_health_check("session_store", storage.sessions.ping)
    hub.add_health_check("capture_writer", capture_writer_check(storage.writer), critical=False)
    hub.add_gauge_source("capture_queue_depth", lambda: storage.writer.depth)
    hub.add_gauge_source("capture_journal_backlog", lambda: storage.writer.journal_backlog)
    hub.add_gauge_source("capture_dropped", lambda: storage.writer.dropped)


async def _private_by_default(request: web.Request, response: web.StreamResponse) -> None:
    """What the API answers is a learner's own (transcripts, tokens): never cached."""
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
        response.headers.setdefault("X-Content-Type-Options", "nosniff")


async def _close_connections(app: web.Application) -> None:
    engine = app.get(ENGINE)
    if engine is not None:
        await engine.lifecycle.close_all()

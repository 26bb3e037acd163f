"""Admin API handlers (`/admin/api/*`), the dashboard page and `/metrics`.

Every `/admin/api/*` handler is wrapped by `guarded`: no key configured -> 503
(`admin_disabled`: the surface is closed, never open); a missing or wrong `X-Admin-Key`
-> 401, or 429 with `Retry-After` once that client address has failed too often (a right
key is never refused; see admin/auth.py). The dashboard page and
its static files need no key: they hold no data, and ask for the key in the browser.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from admin.apidoc import (
    ANY_OBJECT,
    BOOLEAN,
    INTEGER,
    NUMBER,
    STRING,
    content,
    describe,
    error,
    json,
    obj,
)
from admin.auth import FailureLimiter, keys_match
from admin.errors import json_error
from admin.maintenance import MAX_MESSAGE

if TYPE_CHECKING:
    from admin.hub import AdminHub

STATIC_DIR = Path(__file__).parent / "static"
_NO_STORE = {"Cache-Control": "no-store"}
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


MAINTENANCE = obj(
    {"enabled": BOOLEAN, "message": STRING, "retry_after": INTEGER},
    {"changed_at": {**NUMBER, "nullable": True}, "backend": STRING, "sync_error": STRING},
)
HEALTH = obj(
    {
        "status": {"enum": ["healthy", "degraded", "unhealthy"]},
        "reasons": {"type": "array", "items": STRING},
        "checks": ANY_OBJECT,
        "maintenance": MAINTENANCE,
    }
)
ARRAY = {"type": "array"}
PROCESS = {"scope": STRING, "pid": INTEGER, "timestamp": NUMBER}


def _ok(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=_NO_STORE)


class AdminApi:
    def __init__(self, hub: AdminHub) -> None:
        self.hub = hub

    # --- access control --------------------------------------------------------------
    def guarded(self, handler: Handler) -> Handler:
        """`handler` behind the admin key (and the failed-attempt limit)."""

        @functools.wraps(handler)  # keeps its description (admin/apidoc.py)
        async def guarded(request: web.Request) -> web.StreamResponse:
            hub = self.hub
            if not hub.admin_api_key:
                return json_error(
                    503,
                    "admin_disabled",
                    "The admin API is disabled: set ADMIN_API_KEY to enable it.",
                )
            denied = self._check_credential(
                request,
                hub.admin_api_key,
                request.headers.get("X-Admin-Key"),
                "X-Admin-Key",
                hub.auth_limiter,
            )
            return denied or await handler(request)

        return guarded

    def _check_credential(
        self,
        request: web.Request,
        expected: str,
        given: str | None,
        what: str,
        limiter: FailureLimiter,
    ) -> web.Response | None:
        """None when `given` is right (always, whatever anyone failed before); else 401,
        or 429 once this client address has failed too often."""
        if keys_match(expected, given):
            return None
        client = request.remote or "unknown"
        self.hub.prom.auth_failures.inc()
        wait = limiter.retry_after(client)  # blocked by its earlier failures?
        limiter.fail(client)
        if wait:
            self.hub.count_limited("admin_failures")
            return json_error(
                429,
                "too_many_attempts",
                f"Too many failed attempts; retry in {wait} s.",
                headers={"Retry-After": str(wait)},
            )
        reason = "missing" if not given else "invalid"
        return json_error(401, "unauthorized", f"{what} {reason}.")

    # --- dashboard -------------------------------------------------------------------
    @describe(
        "The admin dashboard (asks for the key in the browser)",
        tags=("admin",),
        responses={200: content("text/html")},
    )
    async def dashboard(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            STATIC_DIR / "index.html",
            headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"},
        )

    @describe(
        "Redirects to /admin/", tags=("admin",), responses={308: {"description": "To /admin/"}}
    )
    async def dashboard_redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect("/admin/")

    # --- admin API -------------------------------------------------------------------
    @describe(
        "Health of every dependency; 503 when unhealthy",
        auth="admin",
        tags=("admin",),
        responses={200: json(HEALTH), 503: json(HEALTH, "Unhealthy")},
    )
    async def health(self, request: web.Request) -> web.StreamResponse:
        report = await self.hub.health_report()
        return _ok(report, status=503 if report["status"] == "unhealthy" else 200)

    @describe(
        "Requests, errors, latency percentiles, sessions, voice stages, fleet",
        auth="admin",
        tags=("admin",),
        responses={200: json(obj({**PROCESS, "requests": ANY_OBJECT, "maintenance": MAINTENANCE}))},
    )
    async def metrics(self, request: web.Request) -> web.StreamResponse:
        return _ok({**self.hub.overview(), "fleet": await self.hub.fleet()})

    @describe(
        "Request metrics per route template and method",
        auth="admin",
        tags=("admin",),
        responses={200: json(obj({**PROCESS, "endpoints": {}}))},
    )
    async def endpoints(self, request: web.Request) -> web.StreamResponse:
        return _ok(
            {
                "scope": "process",
                "pid": os.getpid(),
                "timestamp": time.time(),
                "endpoints": self.hub.http.endpoints(),
            }
        )

    @describe(
        "CPU, memory, file descriptors, connections, event-loop lag",
        auth="admin",
        tags=("admin",),
        responses={200: json(obj({"event_loop_lag": ANY_OBJECT, "uptime_seconds": NUMBER}))},
    )
    async def system(self, request: web.Request) -> web.StreamResponse:
        sample = await self.hub.system.sample()
        return _ok(
            {
                **sample,
                "event_loop_lag": self.hub.loop_lag.snapshot(),
                "tasks": len(asyncio.all_tasks()),  # a leak shows as steady growth
                "uptime_seconds": round(self.hub.uptime(), 1),
                "timestamp": time.time(),
            }
        )

    @describe(
        "Recent 5xx and provider errors, each with its request id",
        auth="admin",
        tags=("admin",),
        query={"limit": {"type": "integer", "minimum": 1, "maximum": 200}},
        responses={
            200: json(obj({"scope": STRING, "pid": INTEGER, "total": INTEGER, "errors": ARRAY})),
            400: error("Bad input", "invalid_limit"),
        },
    )
    async def errors(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("limit", "50")
        try:
            limit = int(raw)
        except ValueError:
            limit = -1
        if not 1 <= limit <= 200:
            return json_error(400, "invalid_limit", "limit must be an integer from 1 to 200.")
        return _ok(
            {
                "scope": "process",
                "pid": os.getpid(),
                "total": self.hub.errors.total,
                "errors": self.hub.errors.recent(limit),
            }
        )

    @describe("Maintenance mode", auth="admin", tags=("admin",), responses={200: json(MAINTENANCE)})
    async def maintenance_get(self, request: web.Request) -> web.StreamResponse:
        return _ok(self.hub.maintenance.to_dict())

    @describe(
        "Switch maintenance mode (new sessions and /api/* are refused with 503 while on)",
        auth="admin",
        tags=("admin",),
        body={
            **obj(
                {"enabled": BOOLEAN},
                {
                    "message": {"type": "string", "maxLength": MAX_MESSAGE},
                    "retry_after": {"type": "integer", "minimum": 1, "maximum": 86400},
                },
            ),
            "additionalProperties": False,
        },
        responses={
            200: json(MAINTENANCE),
            400: error("Bad input", "invalid_json", "invalid_maintenance"),
            503: error("The shared state could not be written", "maintenance_unavailable"),
        },
    )
    async def maintenance_set(self, request: web.Request) -> web.StreamResponse:
        ctype = request.content_type
        if ctype != "application/json" and not (
            ctype.startswith("application/") and ctype.endswith("+json")
        ):
            return json_error(
                415,
                "unsupported_media_type",
                "Send the body as JSON, with `Content-Type: application/json`.",
            )
        try:
            body = await request.json()
        except (ValueError, RecursionError):  # RecursionError: [[[[... nested too deep
            return json_error(400, "invalid_json", "The body must be a JSON object.")
        problem = _validate_maintenance(body)
        if problem:
            return json_error(400, "invalid_maintenance", problem)
        try:
            await self.hub.maintenance.set(
                body["enabled"],
                body.get("message", ""),
                body.get("retry_after", 300),
            )
        except Exception as exc:
            return json_error(
                503,
                "maintenance_unavailable",
                f"The shared maintenance state could not be written: {type(exc).__name__}.",
            )
        self.hub.prom.maintenance.set(1 if self.hub.maintenance.enabled else 0)
        return _ok(self.hub.maintenance.to_dict())

    # --- Prometheus ------------------------------------------------------------------
    @describe(
        "Prometheus exposition",
        auth="metrics",
        tags=("metrics",),
        responses={200: content("text/plain")},
    )
    async def prometheus(self, request: web.Request) -> web.StreamResponse:
        token = self.hub.metrics_token
        if token:
            auth = request.headers.get("Authorization", "")
            given = auth[7:] if auth.startswith("Bearer ") else None
            denied = self._check_credential(
                request, token, given, "Bearer token", self.hub.metrics_limiter
            )
            if denied:
                return denied
        self.hub.sample_gauges()
        prom = self.hub.prom
        # Multiprocess mode reads every worker's file: off the event loop.
        body = await asyncio.to_thread(prom.exposition) if prom.multiproc_dir else prom.exposition()
        resp = web.Response(body=body, headers=_NO_STORE)
        # Set the exact exposition content type (with version) on the header itself.
        resp.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
        return resp

    def routes(self) -> list[web.AbstractRouteDef]:
        g = self.guarded
        return [
            web.get("/admin", self.dashboard_redirect, allow_head=False),
            web.get("/admin/", self.dashboard),
            web.static("/admin/static", STATIC_DIR),
            web.get("/admin/api/health/detailed", g(self.health)),
            web.get("/admin/api/metrics", g(self.metrics)),
            web.get("/admin/api/metrics/endpoints", g(self.endpoints)),
            web.get("/admin/api/metrics/system", g(self.system)),
            web.get("/admin/api/metrics/errors", g(self.errors)),
            web.get("/admin/api/maintenance", g(self.maintenance_get)),
            web.post("/admin/api/maintenance", g(self.maintenance_set)),
            web.get("/metrics", self.prometheus),
        ]


def _validate_maintenance(body: object) -> str | None:
    if not isinstance(body, dict):
        return "The body must be a JSON object."
    unknown = set(body) - {"enabled", "message", "retry_after"}
    if unknown:
        return f"Unknown field(s): {', '.join(sorted(unknown))}."
    if not isinstance(body.get("enabled"), bool):
        return "enabled is required and must be true or false."
    message = body.get("message", "")
    if not isinstance(message, str) or len(message) > MAX_MESSAGE:
        return f"message must be a string of at most {MAX_MESSAGE} characters."
    retry = body.get("retry_after", 300)
    if isinstance(retry, bool) or not isinstance(retry, int) or not 1 <= retry <= 86400:
        return "retry_after must be an integer number of seconds from 1 to 86400."
    return None

"""The admin middleware: request id, timing, metrics, maintenance gate, access log.

Put it first in the application's middleware list so it sees every request, including
404s, errors other middlewares turned into responses, and exceptions nobody caught (which
it turns into a JSON 500 carrying the request id, after logging the stack trace).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from admin.context import new_request_id, request_id_var, session_id_var
from admin.errors import json_error

if TYPE_CHECKING:
    from admin.hub import AdminHub

access_log = logging.getLogger("access")
log = logging.getLogger("admin.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNMATCHED = "<unmatched>"
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: The request's correlation id (also in `request_id_var` while the handler runs).
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Paths refused while maintenance is on; `/`, `/metrics`, `/admin/*` and `/ws` are not
#: (the WebSocket handler refuses *new* sessions itself, with close code 4503).
MAINTENANCE_GATED_PREFIXES = ("/api/",)
#: Polled every few seconds by Prometheus and the dashboard: logged at DEBUG when they succeed.
_QUIET_PREFIXES = ("/metrics", "/admin/api/", "/admin/static/")


def route_template(request: web.Request) -> str:
    """`/ws/{session_id}`, never `/ws/abc123`: label cardinality stays bounded."""
    resource = request.match_info.route.resource
    if resource is None:
        return UNMATCHED
    return resource.canonical


def error_code_of(response: web.StreamResponse) -> str:
    """The `error.code` of a JSON error body, when there is one to read cheaply."""
    body = getattr(response, "body", None)
    if not isinstance(body, bytes) or len(body) > 65536:
        return ""
    if response.content_type != "application/json":
        return ""
    try:
        data = json.loads(body)
        code = data["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return ""
    return str(code)[:64] if code is not None else ""


def make_middleware(
    hub: AdminHub,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def admin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = new_request_id(request.headers.get("X-Request-ID"))
        request[REQUEST_ID] = request_id
        token = request_id_var.set(request_id)
        # Routes with a {session_id} (the WebSocket, session history) log under it; the
        # tasks a WebSocket session starts copy this context, so their lines carry it too.
        session_id = request.match_info.get("session_id")
        session_token = (
            session_id_var.set(session_id) if session_id and _SESSION_ID.match(session_id) else None
        )
        websocket = request.headers.get("Upgrade", "").lower() == "websocket"
        if websocket:
            hub.ws_opened()
        started = time.perf_counter()
        route = route_template(request)
        method = request.method if request.method in _METHODS else "OTHER"
        status = 500
        code = ""
        deliberate = False
        response: web.StreamResponse | None = None
        try:
            maintenance = hub.maintenance
            if maintenance.enabled and request.path.startswith(MAINTENANCE_GATED_PREFIXES):
                response = json_error(
                    503,
                    "maintenance",
                    maintenance.message,
                    headers={"Retry-After": str(maintenance.state.retry_after)},
                )
                code = "maintenance"
            else:
                response = await handler(request)
            status = response.status
            code = code or (error_code_of(response) if status >= 400 else "")
            deliberate = _deliberate(response)
        except web.HTTPException as exc:
            status = exc.status
            deliberate = _deliberate(exc)
            code = error_code_of(exc) or exc.reason.lower().replace(" ", "_")
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away before the answer
            raise
        except Exception as exc:
            log.exception("unhandled error in %s %s", request.method, route)
            code = type(exc).__name__
            status = 500
            response = json_error(
                500,
                "internal_error",
                "Internal server error; quote the request id when reporting it.",
                request_id=request_id,
            )
        finally:
            elapsed = time.perf_counter() - started
            hub.record_request(route, method, status, elapsed, code, deliberate)
            _access(request, route, status, elapsed)
            if websocket:
                hub.ws_closed()
            if session_token is not None:
                session_id_var.reset(session_token)
            request_id_var.reset(token)
        return response

    return admin_middleware


def _deliberate(response: web.StreamResponse) -> bool:
    """A 503 with Retry-After is the server saying "not now" on purpose, not failing."""
    return response.status == 503 and "Retry-After" in response.headers


def _access(request: web.Request, route: str, status: int, elapsed: float) -> None:
    quiet = status < 400 and request.path.startswith(_QUIET_PREFIXES)
    level = logging.DEBUG if quiet else logging.INFO
    if not access_log.isEnabledFor(level):
        return
    access_log.log(
        level,
        "%s %s %d",
        request.method,
        request.path,
        status,
        extra={
            "method": request.method,
            "path": request.path,  # never the query string: it may hold a token
            "route": route,
            "status": status,
            "duration_ms": round(elapsed * 1000.0, 2),
            "remote": request.remote,
        },
    )


async def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare` signal: every response, streamed or not, carries the id."""
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["X-Request-ID"] = request_id

"""The edge middlewares: the client's address first, then the per-address request limit.

`client_address` runs before everything else, so limits, the access log and metrics all
see the address TRUSTED_PROXIES resolves (as `request.remote`). `request_limit` answers
429 `rate_limited` with Retry-After when one address sends more HTTP requests than
HTTP_PER_MINUTE_PER_ADDRESS. Not counted here: static files (the page, its scripts: cheap
and cached), WebSocket upgrades on the voice routes (they have connection limits of their
own, server/lifecycle.py), and requests carrying the right operator credential (an
operator behind the same address as a flood must still get in: `operator`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from server.http_errors import error_body
from server.limits.edge import ClientAddresses
from server.limits.policy import Limited, Limits

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

#: Not counted by the per-address request limit.
UNCOUNTED_PREFIXES = ("/static/", "/admin/static/")
UNCOUNTED_PATHS = frozenset({"/", "/favicon.ico", "/admin/", "/admin"})


def client_address(addresses: ClientAddresses) -> Middleware:
    @web.middleware
    async def client_address(request: web.Request, handler: Handler) -> web.StreamResponse:
        client = addresses.client(request.remote, request.headers)
        if client != request.remote:
            request = request.clone(remote=client)
        return await handler(request)

    return client_address


def limited_response(exc: Limited) -> web.Response:
    return web.json_response(
        error_body("rate_limited", str(exc)),
        status=429,
        headers={"Retry-After": exc.retry_after_header},
    )


def request_limit(
    limits: Limits,
    voice_routes: frozenset[str],
    operator: Callable[[web.Request], bool] = lambda request: False,
) -> Middleware:
    """`voice_routes`: route templates whose upgrades are counted as connections instead;
    `operator`: whether a request carries a right admin key or metrics token."""

    @web.middleware
    async def request_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if counted(request, voice_routes) and not operator(request):
            try:
                await limits.http_request(request.remote or "unknown")
            except Limited as exc:
                return limited_response(exc)
        return await handler(request)

    return request_limit


def counted(request: web.Request, voice_routes: frozenset[str]) -> bool:
    path = request.path
    if path in UNCOUNTED_PATHS or path.startswith(UNCOUNTED_PREFIXES):
        return False
    resource = request.match_info.route.resource
    upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    return not (upgrade and resource is not None and resource.canonical in voice_routes)

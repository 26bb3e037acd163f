"""The connection half of every WebSocket transport: ping, close, abort, liveness counters.

Transports over aiohttp WebSockets (browser, Twilio Media Streams) inherit this and add
only their wire format. aiohttp's autoping and heartbeat are off: pings and pongs reach the
transport's receive loop and count as traffic for `server.liveness.watch`.
"""

from __future__ import annotations

from aiohttp import web

from server.liveness import LivenessConfig, Traffic


class WebSocketPeer:
    #: Per-address limits apply unless a transport knows better (see Transport).
    address_limited = True

    def __init__(
        self, request: web.Request, ws: web.WebSocketResponse, liveness: LivenessConfig
    ) -> None:
        self.request = request
        self.ws = ws
        self.liveness = liveness
        self.traffic = Traffic()
        #: The client's address (the edge middleware resolved TRUSTED_PROXIES already).
        self.client = request.remote or "unknown"

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def ping(self) -> None:
        await self.ws.ping()

    async def close(self, code: int, reason: str) -> None:
        if not self.ws.closed:
            await self.ws.close(code=code, message=reason.encode())

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()

"""The connection half of every WebSocket transport: ping, close, abort, liveness counters.

Transports over aiohttp WebSockets (browser, Twilio Media Streams) inherit this and add
only their wire format. aiohttp's autoping and heartbeat are off: pings and pongs reach the
transport's receive loop and count as traffic for `server.liveness.watch`.
"""

from __future__ import annotations

import contextlib
import socket

from aiohttp import web

from server.liveness import LivenessConfig, Traffic

#: The kernel's send buffer of a voice connection (Linux doubles it for its bookkeeping).
#: Left to autotuning it grows to `net.ipv4.tcp_wmem`'s maximum (4 MB by default): a
#: client that stopped reading then takes two minutes of reply audio to fill it before the
#: server's own bounded queue even notices, and holds 4 MB of kernel memory meanwhile.
#: 128 KB is seconds of audio, far more than any link's bandwidth-delay product needs.
SEND_BUFFER_BYTES = 128 * 1024


def bound_send_buffer(request: web.Request) -> None:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


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
        bound_send_buffer(request)
        # Kept: once aiohttp gives up on a close it closes the transport (which waits,
        # forever, to flush a buffer the peer never reads) and the request forgets it.
        self._transport = request.transport

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def ping(self) -> None:
        await self.ws.ping()

    async def close(self, code: int, reason: str) -> None:
        if not self.ws.closed:
            await self.ws.close(code=code, message=reason.encode())

    def abort(self) -> None:
        transport = self.request.transport or self._transport
        if transport is not None:
            transport.abort()

"""What every fake provider server shares: an aiohttp app on 127.0.0.1 (random port),
API-key checking, a log of requests, configurable delays and a queue of faults."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.latency import Delay

#: The longest a "hang" lasts (the client's timeout should fire long before).
HANG_SECONDS = 30.0


@dataclass
class Fault:
    """kind: `status` (HTTP error), `hang` (no first byte), `drop` (close the connection
    after `after` chunks/events, or bytes of audio for Deepgram live), `malformed` (an
    unparsable message after `after` chunks), `error_event` (the provider's in-stream
    error after `after` chunks), `hang_finalize` (Deepgram: never answer Finalize)."""

    kind: str
    status: int = 500
    retry_after: float | None = None
    after: int = 0
    error_type: str = ""


class FakeServer:
    auth_header = "Authorization"
    auth_prefix = "Bearer "

    def __init__(self, api_key: str = "test-key-0123456789") -> None:
        self.api_key = api_key
        self.faults: deque[Fault] = deque()
        self.always: Fault | None = None
        #: Seconds before the first byte of each answer / between chunks (a `Spread` is
        #: drawn per answer / chunk: tests.fakes.latency).
        self.first_delay: Delay = 0.0
        self.chunk_delay: Delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    # ---------------------------------------------------------------- life cycle
    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> FakeServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.routes(app)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- faults
    def fault(self, kind: str, **kw: Any) -> None:
        """Inject a fault into the next request."""
        self.faults.append(Fault(kind, **kw))

    def take_fault(self) -> Fault | None:
        return self.faults.popleft() if self.faults else self.always

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r["path"] == path)

    async def hang(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HANG_SECONDS):
                await self._stopping.wait()

    # ---------------------------------------------------------------- helpers
    def authorized(self, request: web.Request) -> bool:
        return request.headers.get(self.auth_header, "") == self.auth_prefix + self.api_key

    def log_request(self, request: web.Request, body: Any) -> None:
        self.requests.append(
            {
                "path": request.path,
                "query": dict(request.query),
                "body": body,
                "headers": dict(request.headers),
            }
        )

    @staticmethod
    def abort(request: web.Request) -> None:
        """Drop the TCP connection without finishing the response."""
        transport = request.transport
        if transport is not None:
            transport.abort()

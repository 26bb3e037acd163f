"""The access log the admin middleware writes: one JSON line a request, correlated by id."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from admin import AdminHub
from admin.maintenance import MemoryBackend
from server.logging_setup import configure_logging


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    yield out
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved:
        root.addHandler(h)
    root.setLevel(level)


async def test_access_and_error_lines_share_the_request_id(log_stream: io.StringIO) -> None:
    hub = AdminHub(admin_api_key="access-log-key", maintenance_backend=MemoryBackend())

    async def item(request: web.Request) -> web.Response:
        logging.getLogger("handler").info("looking up item")
        return web.json_response({})

    async def boom(request: web.Request) -> web.Response:
        raise KeyError("missing-thing")

    app = web.Application(middlewares=[hub.middleware])
    hub.install(app)
    app.router.add_get("/api/items/{item_id}", item)
    app.router.add_get("/api/boom", boom)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        r1 = await client.get("/api/items/7?token=should-not-be-logged")
        r2 = await client.get("/api/boom")
        await client.get("/metrics")  # a successful scrape is logged at DEBUG only
    finally:
        await client.close()
    lines = [json.loads(x) for x in log_stream.getvalue().splitlines()]
    rid1, rid2 = r1.headers["X-Request-ID"], r2.headers["X-Request-ID"]

    handler_line = next(x for x in lines if x["logger"] == "handler")
    assert handler_line["request_id"] == rid1
    access = [x for x in lines if x["logger"] == "access"]
    assert [a["path"] for a in access] == ["/api/items/7", "/api/boom"]
    a1, a2 = access
    assert a1["request_id"] == rid1
    assert a1["route"] == "/api/items/{item_id}"
    assert a1["status"] == 200
    assert a1["method"] == "GET"
    assert a1["duration_ms"] >= 0
    assert "should-not-be-logged" not in log_stream.getvalue()
    assert a2["status"] == 500 and a2["request_id"] == rid2
    error = next(x for x in lines if x["level"] == "error")
    assert error["request_id"] == rid2
    assert "KeyError: 'missing-thing'" in error["exc"]


async def test_websocket_counted_and_logged_under_its_session_id(log_stream: io.StringIO) -> None:
    hub = AdminHub(admin_api_key="access-log-key", maintenance_backend=MemoryBackend())
    seen: list[int] = []

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        seen.append(hub.active_websockets)

        async def background() -> None:  # a session's task: copies the context
            logging.getLogger("session").info("turn finished")

        await asyncio.create_task(background())
        await ws.close()
        return ws

    app = web.Application(middlewares=[hub.middleware])
    hub.install(app)
    app.router.add_get("/ws/{session_id}", ws_handler)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        async with client.ws_connect("/ws/conv-123") as ws:
            await ws.receive()
        for _ in range(50):
            if hub.active_websockets == 0:
                break
            await asyncio.sleep(0.02)
    finally:
        await client.close()
    assert seen == [1]
    assert hub.active_websockets == 0 and hub.websockets_total == 1
    lines = [json.loads(x) for x in log_stream.getvalue().splitlines()]
    turn = next(x for x in lines if x["logger"] == "session")
    assert turn["session_id"] == "conv-123"
    access = next(x for x in lines if x["logger"] == "access")
    assert access["route"] == "/ws/{session_id}" and access["status"] == 101
    assert access["session_id"] == "conv-123"

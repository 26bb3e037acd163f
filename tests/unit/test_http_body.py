"""The JSON body reader at the HTTP edge: bodies that arrive in pieces are read whole."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from server.http_errors import json_errors, read_json_object


async def _echo_length(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    return web.json_response({"chars": len(body["text"])})


async def _post_in_pieces(port: int, body: bytes, pieces: int) -> tuple[int, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    step = -(-len(body) // pieces)
    for i in range(0, len(body), step):
        writer.write(body[i : i + step])
        await writer.drain()
        await asyncio.sleep(0.05)  # separate segments: the server sees a partial body
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


async def test_body_split_across_segments_is_read_whole() -> None:
    app = web.Application(middlewares=[json_errors])
    app.router.add_post("/x", _echo_length)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        body = json.dumps({"text": "a" * 20_000}).encode()
        status, payload = await _post_in_pieces(port, body, 4)
        assert (status, payload) == (200, {"chars": 20_000})
        too_big = json.dumps({"text": "a" * 70_000}).encode()
        status, payload = await _post_in_pieces(port, too_big, 4)
        assert status == 413 and payload["error"]["code"] == "payload_too_large"
    finally:
        await runner.cleanup()


async def test_deeply_nested_json_is_a_400_not_a_500() -> None:
    app = web.Application(middlewares=[json_errors])
    app.router.add_post("/x", _echo_length)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        status, payload = await _post_in_pieces(port, b"[" * 60_000, 1)
        assert status == 400 and payload["error"]["code"] == "invalid_json"
    finally:
        await runner.cleanup()

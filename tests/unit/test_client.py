"""The command-line client against a loopback server speaking protocol v1."""

from __future__ import annotations

import json
import time

from aiohttp import WSMsgType, web

from server.client import FRAME_BYTES, Conversation


async def _text_only_server(request: web.Request) -> web.WebSocketResponse:
    """Answers one turn with text and no audio, as a session started with tts false does."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    ready = {"type": "ready", "session_id": "s", "sample_rate": 16000,
             "output_sample_rate": 16000, "protocol": 1}  # fmt: skip
    await ws.send_json(ready)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT and json.loads(msg.data)["type"] == "start":
            await ws.send_json(ready)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_json({"type": "transcript", "turn_id": 1, "text": "hi", "final": True})
            await ws.send_json({"type": "response_done", "turn_id": 1, "text": "Hello."})
            # ...and stays open, like a live session waiting for the next turn.
    await ws.close()
    return ws


async def test_turn_without_tts_ends_at_response_done() -> None:
    app = web.Application()
    app.router.add_get("/ws/{session_id}", _text_only_server)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        conv = await Conversation.connect(f"ws://127.0.0.1:{port}", "s", tts=False)
        started = time.monotonic()
        result = await conv.turn(
            bytes(FRAME_BYTES), realtime=False, trailing_silence=0.0, timeout=5.0
        )
        assert result.reply == "Hello."
        assert time.monotonic() - started < 2.0  # not the 5 s timeout
        await conv.ws.close()
    finally:
        await runner.cleanup()

"""Audio pacing over the browser WebSocket (protocol v1), with in-test providers: a client
sending audio faster than AUDIO_MAX_SPEED x real time is told once (`audio_too_fast`),
its connection is read no faster than 20 frames a second while its audio is dropped, and
its session goes on. A real-time client never hears of it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from pipelines.registry import Providers
from server.app import create_app
from server.settings import Settings
from server.transports.browser import AUDIO_DROP_PAUSE_S
from tests.fakes_engine import ScriptedLLM, ScriptedSTT, ToneTTS

FRAME = bytes(640)  # 20 ms at 16 kHz
BIG = bytes(64 * 1024)  # about 2 s at 16 kHz


async def client(tmp_path: Path, stt: ScriptedSTT) -> TestClient:
    providers = Providers(stt=stt, llm=ScriptedLLM("Noted."), tts=ToneTTS(0.1))
    settings = Settings.from_env(
        {},
        database_path=str(tmp_path / "c.db"),
        embedder="static",
        audio_max_speed=1.5,
        audio_burst_seconds=1.0,
    )
    c = TestClient(TestServer(create_app(settings, providers=providers)))
    await c.start_server()
    return c


async def until(ws: aiohttp.ClientWebSocketResponse, kind: str, seen: list[dict[str, Any]]):
    async with asyncio.timeout(30):
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                event = json.loads(msg.data)
                seen.append(event)
                if event["type"] == kind:
                    return event
    raise AssertionError(f"closed before {kind}: {seen}")


async def test_a_flood_is_told_once_read_slowly_and_the_session_goes_on(tmp_path: Path) -> None:
    stt = ScriptedSTT(["flooded turn", "next turn"], interim_every=100000)
    c = await client(tmp_path, stt)
    try:
        async with c.ws_connect("/ws/pace-flood") as ws:
            seen: list[dict[str, Any]] = []
            await until(ws, "ready", seen)
            await ws.send_json({"type": "start", "mode": "push_to_talk", "tts": False})
            await until(ws, "ready", seen)
            await ws.send_json({"type": "talk_start"})
            t0 = time.monotonic()
            for _ in range(30):  # a minute of audio at once
                await ws.send_bytes(BIG)
            await ws.send_json({"type": "ping"})
            await until(ws, "pong", seen)
            took = time.monotonic() - t0
            # Every frame after the first had its audio (partly) dropped, and each one
            # held the connection for the pause: the server read them at 20 a second.
            assert took >= 28 * AUDIO_DROP_PAUSE_S, took
            await ws.send_json({"type": "talk_end"})
            final = await until(ws, "response_done", seen)
            assert final["text"] == "Noted."
            # About 1 s of burst + 1.5 s a second of reading, not the minute sent.
            frames = stt.pushed_frames[0]
            assert 50 <= frames <= 50 + 75 * (took + 0.5), (frames, took)

            # The next turn, at real-time pace, is heard whole and nobody complains again.
            await ws.send_json({"type": "talk_start"})
            for _ in range(50):
                await ws.send_bytes(FRAME)
                await asyncio.sleep(0.02)
            await ws.send_json({"type": "talk_end"})
            await until(ws, "response_done", seen)
            assert stt.pushed_frames[1] == 50
            errors = [e for e in seen if e["type"] == "error"]
            assert [e["code"] for e in errors] == ["audio_too_fast"]
    finally:
        await c.close()


async def test_a_real_time_client_with_jitter_is_never_told(tmp_path: Path) -> None:
    stt = ScriptedSTT(["a", "b", "c"], interim_every=100000)
    c = await client(tmp_path, stt)
    try:
        async with c.ws_connect("/ws/pace-real-time") as ws:
            seen: list[dict[str, Any]] = []
            await until(ws, "ready", seen)
            await ws.send_json({"type": "start", "mode": "push_to_talk", "tts": False})
            await until(ws, "ready", seen)
            await ws.send_json({"type": "talk_start"})
            start = time.monotonic()
            for i in range(150):  # 3 s, in bursts: 0.4 s held back, then sent at once
                if i % 20 == 0:
                    delay = start + (i + 20) * 0.02 - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await ws.send_bytes(FRAME)
            await ws.send_json({"type": "talk_end"})
            await until(ws, "response_done", seen)
            assert stt.pushed_frames == [150]
            assert not [e for e in seen if e["type"] == "error"]
    finally:
        await c.close()

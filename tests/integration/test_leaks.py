"""1000 WebSocket sessions opened and closed against the real app leave nothing behind: no
task, no file descriptor, no memory.

The app is the real one (`create_app` with SQLite captures and the in-memory session
store), on the `simulated` providers so that a cycle takes milliseconds. Cycles vary the
way real clients leave: at once, mid-audio, mid-reply (a text turn cancelled by the
hang-up), after a finished reply, and politely with `end`. Session ids come from a small
pool, as returning users' do, so the session store (which keeps context for reconnects by
design) does not grow with the number of cycles.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import tracemalloc
from pathlib import Path

import aiohttp
import psutil
from aiohttp import web

from server.app import create_app
from server.appkeys import ENGINE
from server.settings import Settings

CYCLES = 1000
WARMUP = 150
CONCURRENCY = 10
FRAME = bytes(640)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def one_cycle(http: aiohttp.ClientSession, base: str, i: int, token: str) -> None:
    sid = f"leak-{i % CONCURRENCY}"  # each id reconnected many times, by its one learner
    url = f"{base}/ws/{sid}?token={token}"
    async with http.ws_connect(url, timeout=aiohttp.ClientWSTimeout(10)) as ws:
        ready = await ws.receive_json(timeout=5)
        assert ready["type"] == "ready"
        kind = i % 5
        if kind == 1:  # hang up in the middle of streaming audio
            for _ in range(10):
                await ws.send_bytes(FRAME)
        elif kind == 2:  # hang up while the reply is being generated
            await ws.send_str(json.dumps({"type": "text", "text": "hello"}))
            msg = await ws.receive_json(timeout=5)
            assert msg["type"] == "transcript"
        elif kind == 3:  # wait for the whole reply (text only, fast)
            await ws.send_str(json.dumps({"type": "start", "tts": False}))
            await ws.send_str(json.dumps({"type": "text", "text": "tell me more"}))
            async with asyncio.timeout(5):
                while (await ws.receive_json())["type"] != "response_done":
                    pass
        elif kind == 4:  # say goodbye
            await ws.send_str(json.dumps({"type": "end"}))
            async with asyncio.timeout(5):
                while (msg := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
                    pass
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def run_cycles(
    http: aiohttp.ClientSession, base: str, start: int, count: int, token: str
) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def guarded(i: int) -> None:
        async with gate:
            await one_cycle(http, base, i, token)

    await asyncio.gather(*(guarded(i) for i in range(start, start + count)))


async def settle(app: web.Application) -> None:
    """Wait until the server has closed every session (the handler's finally has run)."""
    engine = app[ENGINE]
    async with asyncio.timeout(10):
        while engine.lifecycle.sessions or engine.lifecycle.transports:  # noqa: ASYNC110 (app-owned sets)
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # capture writes of the last turns, close callbacks
    gc.collect()


async def test_thousand_sessions_leave_nothing_behind(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {},
        database_path=str(tmp_path / "captures.db"),
        stt_providers=("simulated",),
        llm_providers=("simulated",),
        tts_providers=("simulated",),
        log_level="warning",
        # One learner on one address opening a thousand connections is a load generator,
        # not a learner: the per-address and per-learner limits are raised, as for make bench.
        max_sockets_per_learner=CONCURRENCY,
        connections_per_second=10_000.0,
        connections_burst=10_000,
        conversation_per_minute=100_000,
    )
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    proc = psutil.Process()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/learners") as resp:
                token = (await resp.json())["learner_token"]
            await run_cycles(http, base, 0, WARMUP, token)  # caches, pools, first imports
            await settle(app)
            tasks_before = len(asyncio.all_tasks())
            fds_before = open_fds()
            rss_before = proc.memory_info().rss
            tracemalloc.start()
            traced_before = tracemalloc.get_traced_memory()[0]

            await run_cycles(http, base, WARMUP, CYCLES, token)
            await settle(app)

            traced_growth = tracemalloc.get_traced_memory()[0] - traced_before
            tracemalloc.stop()
            tasks_after = len(asyncio.all_tasks())
            fds_after = open_fds()
            rss_growth = proc.memory_info().rss - rss_before
    finally:
        await runner.cleanup()

    assert tasks_after == tasks_before, (tasks_before, tasks_after)
    assert fds_after <= fds_before, (fds_before, fds_after)
    # Python objects: under 512 bytes a session. A leaked Session, Outbox, connection or
    # task is kilobytes each (1000 of them: megabytes); what remains is one-off growth of
    # caches and containers (a single 128 KiB dict or buffer resize has been seen) and the
    # work still in flight in the capture writer.
    assert traced_growth < 512 * CYCLES, traced_growth
    # Process memory: allocator slack only (tracemalloc's own tables are in here too).
    assert rss_growth < 16 * 2**20, rss_growth

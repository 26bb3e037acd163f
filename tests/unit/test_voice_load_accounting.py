"""The voice load generator measures what a server really does.

A fake voice server (aiohttp, in the test) answers each turn with reply audio a known delay
after the last speech frame it received; the generator must report that delay as the
latency, and gaps the fake server puts into its audio as underruns. The server side of
these tests is as plain as possible so that what is tested is the generator's accounting.
"""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path

import numpy as np
import pytest
from aiohttp import WSMsgType, web

from loadtest.accounting import PlayerModel, percentile
from loadtest.script import build_script
from loadtest.step import StepPlan, run_step
from loadtest.voice_load import loopback_target

RATE = 16000
CHUNK = RATE * 2 // 10  # 100 ms of PCM16


def tone_wav(path: Path, seconds: float = 0.4) -> Path:
    """A 'speech' clip: any non-zero audio (the fake server only tells zero from not)."""
    t = np.arange(int(seconds * RATE)) / RATE
    pcm = (np.sin(2 * np.pi * 300 * t) * 8000).astype("<i2").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    return path


def fake_server(delay: float, chunks: int = 6, stall_after: int | None = None, stall=0.0):
    """WS protocol v1 enough for the generator: `ready` twice, and for each turn (a run
    of non-zero frames followed by a zero frame) audio_start + `chunks` x 100 ms at
    real-time pace, the first `delay` after the arrival of the turn's last speech frame;
    optionally a stall of `stall` s after chunk `stall_after`."""
    stats = {"turns": 0}

    async def reply(ws: web.WebSocketResponse, last_speech_at: float, turn: int) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, last_speech_at + delay - loop.time()))
        await ws.send_str(json.dumps({"type": "audio_start", "turn_id": turn, "sample_rate": RATE}))
        t0 = loop.time()
        shift = 0.0
        for k in range(chunks):
            if stall_after is not None and k == stall_after:
                shift = stall
            await asyncio.sleep(max(0.0, t0 + k * 0.1 + shift - loop.time()))
            await ws.send_bytes(bytes(CHUNK))
        await ws.send_str(json.dumps({"type": "audio_end", "turn_id": turn}))

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        ready = {"type": "ready", "session_id": request.match_info["sid"], "protocol": 1}
        await ws.send_str(json.dumps(ready))
        loop = asyncio.get_running_loop()
        last_speech_at: float | None = None
        tasks: set[asyncio.Task[None]] = set()
        async for msg in ws:
            if msg.type is WSMsgType.TEXT and json.loads(msg.data)["type"] == "start":
                await ws.send_str(json.dumps(ready))
            elif msg.type is WSMsgType.BINARY:
                if any(msg.data):
                    last_speech_at = loop.time()
                elif last_speech_at is not None:
                    stats["turns"] += 1
                    task = loop.create_task(reply(ws, last_speech_at, stats["turns"]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    last_speech_at = None
        for task in tasks:
            task.cancel()
        return ws

    app = web.Application()
    app.router.add_get("/ws/{sid}", handler)
    return app, stats


async def _run(tmp_path: Path, delay: float, **server_kw):
    app, stats = fake_server(delay, **server_kw)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        script = build_script(tone_wav(tmp_path / "tone.wav"), silence_s=1.2)
        plan = StepPlan(callers=3, measure_s=4.0, warmup_s=0.5, drain_s=1.2)
        result = await run_step(plan, script, "127.0.0.1", port, tag="t", floor_s=delay)
    finally:
        await runner.cleanup()
    return result, stats


@pytest.mark.parametrize("delay", [0.25, 0.5])
async def test_known_latency_comes_back(tmp_path: Path, delay: float) -> None:
    result, stats = await _run(tmp_path, delay)
    assert result["connected"] == 3 and not result["errors"] and not result["disconnects"]
    assert result["turns"] >= 6, result  # 3 callers x 4 s / 1.6 s cycle, at least
    assert result["answered"] == result["turns"]
    assert stats["turns"] >= result["turns"]  # the server saw every turn the caller counted
    lat = result["latency_ms"]
    # Never less than the server's delay: the clock starts at the last speech frame sent.
    assert lat["max"] is not None and min(lat["p50"], lat["p95"]) >= delay * 1000
    # Loopback and timers add a few ms; a quiet machine gives ~1 ms.
    assert lat["p50"] <= delay * 1000 + 25, lat
    assert result["underruns"] == 0
    assert result["reply_audio_s_mean"] == pytest.approx(0.6, abs=1e-6)
    assert result["overhead_raw_ms"]["p50"] == pytest.approx(lat["p50"] - delay * 1000, abs=0.02)


async def test_stalled_reply_audio_counts_as_underrun(tmp_path: Path) -> None:
    result, _ = await _run(tmp_path, 0.2, chunks=6, stall_after=3, stall=0.4)
    assert result["answered"] == result["turns"] >= 6
    # One audible gap per reply: the player runs dry 360 ms after the first chunk (60 ms
    # lead + 300 ms of audio); chunk 3 arrives at 700 ms and plays 60 ms later: 400 ms.
    assert result["underruns"] == result["turns"]
    assert result["turns_with_underrun"] == result["turns"]
    per_turn_gap = result["underrun_gap_ms"] / result["turns"]
    assert 390 <= per_turn_gap <= 440, per_turn_gap
    assert not result["pass"]


def test_player_model_hears_gaps_like_the_browser_player() -> None:
    p = PlayerModel(RATE, start_lead=0.06)
    p.push(10.0, CHUNK)  # plays 10.06 .. 10.16
    p.push(10.1, CHUNK)  # arrives before 10.16: 10.16 .. 10.26
    assert p.underruns == 0 and p.next_time == pytest.approx(10.26)
    p.push(10.5, CHUNK)  # 240 ms after the playhead ran dry: restarts at 10.56
    assert p.underruns == 1 and p.gap_s == pytest.approx(0.30)
    assert p.seconds == pytest.approx(0.3)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 50) is None


@pytest.mark.parametrize("url", ["ws://10.0.0.1:8080", "wss://127.0.0.1:8080", "ws://example.com"])
def test_only_loopback_targets(url: str) -> None:
    with pytest.raises(ValueError):
        loopback_target(url)
    assert loopback_target("ws://localhost:9000") == ("127.0.0.1", 9000)

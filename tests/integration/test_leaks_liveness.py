"""A client that goes silent or stops reading is not kept forever: the liveness watchdog
closes it (4408) and its session, tasks and queued events go with it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

import server.transports.browser as ws_browser
from server.app import create_app
from server.appkeys import ENGINE
from server.liveness import CLOSE_NOT_READING, LivenessConfig, Traffic, watch
from server.settings import Settings


class FakePeer:
    """What `watch` uses of a transport (`server.liveness.Peer`)."""

    def __init__(self) -> None:
        self.closed = False
        self.pings = 0
        self.close_code: int | None = None
        self.close_blocks = False
        self.aborted = 0

    async def ping(self) -> None:
        self.pings += 1

    async def close(self, code: int, reason: str) -> None:
        if self.close_blocks:
            await asyncio.sleep(10)
        self.close_code = code
        self.closed = True

    def abort(self) -> None:
        self.aborted += 1


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[web.Application, int]]:
    """The real app on a free loopback port, cleaned up afterwards."""
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield app, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


FAST = LivenessConfig(tick_s=0.05, idle_ping_s=0.2, idle_close_s=0.5, stall_s=0.3)


async def test_busy_connection_is_left_alone() -> None:
    ws, traffic = FakePeer(), Traffic()

    async def busy() -> None:
        for _ in range(40):
            traffic.rx += 1
            traffic.tx += 1
            await asyncio.sleep(0.02)

    task = asyncio.create_task(watch(ws, traffic, [1], "s", FAST))
    await busy()
    assert not task.done() and ws.close_code is None and ws.pings == 0
    task.cancel()


async def test_quiet_peer_is_pinged_then_closed() -> None:
    ws, traffic = FakePeer(), Traffic()
    async with asyncio.timeout(2):
        await watch(ws, traffic, [], "s", FAST)
    assert ws.pings == 1 and ws.close_code == CLOSE_NOT_READING


async def test_stalled_reader_is_closed_and_aborted_when_close_cannot_get_through() -> None:
    ws, traffic = FakePeer(), Traffic()
    ws.close_blocks = True

    async def keep_talking() -> None:  # the peer still sends; it only stopped reading
        while True:
            traffic.rx += 1
            await asyncio.sleep(0.02)

    talker = asyncio.create_task(keep_talking())
    try:
        async with asyncio.timeout(4):
            await watch(ws, traffic, ["queued"], "s", FAST)
    finally:
        talker.cancel()
    assert ws.aborted == 1


async def test_silent_client_is_closed_by_the_real_app(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ws_browser, "LIVENESS", FAST)
    settings = Settings.from_env(
        {},
        database_path=str(tmp_path / "c.db"),
        stt_providers=("simulated",),
        llm_providers=("simulated",),
        tts_providers=("simulated",),
    )
    async with serving(settings) as (app, port):
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/api/learners") as resp:
                token = (await resp.json())["learner_token"]
            # autoping off: the client does not answer the server's ping (a dead peer).
            url = f"http://127.0.0.1:{port}/ws/quiet?token={token}"
            ws = await http.ws_connect(url, autoping=False)
            assert json.loads((await ws.receive()).data)["type"] == "ready"
            kinds = []
            async with asyncio.timeout(5):
                while True:
                    msg = await ws.receive()
                    kinds.append(msg.type)
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        break
            assert aiohttp.WSMsgType.PING in kinds
            assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == CLOSE_NOT_READING
            assert msg.extra == "client not responding"
            await ws.close()
        engine = app[ENGINE]
        async with asyncio.timeout(3):
            while engine.lifecycle.sessions:  # noqa: ASYNC110 (an app-owned set)
                await asyncio.sleep(0.02)


async def test_a_client_that_never_says_who_it_is_is_closed(tmp_path: Path, monkeypatch) -> None:
    """No `?token=` and no first message: no session is ever made, and the connection is
    closed (4408) after FIRST_MESSAGE_TIMEOUT_S; pings do not keep it open."""
    monkeypatch.setattr(ws_browser, "FIRST_MESSAGE_TIMEOUT_S", 0.5)
    settings = Settings.from_env({}, database_path=str(tmp_path / "c.db"),
                                 stt_providers=("simulated",), llm_providers=("simulated",),
                                 tts_providers=("simulated",))  # fmt: skip
    async with serving(settings) as (app, port):
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"http://127.0.0.1:{port}/ws/anonymous-and-silent")
            assert json.loads((await ws.receive()).data)["type"] == "ready"
            await ws.ping()
            await ws.send_str('{"type": "ping"}')
            assert json.loads((await ws.receive()).data) == {"type": "pong"}
            assert not app[ENGINE].lifecycle.sessions  # nothing exists before the learner
            async with asyncio.timeout(5):
                msg = await ws.receive()
                while msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    msg = await ws.receive()
            assert msg.data == CLOSE_NOT_READING and msg.extra == "no first message"


async def test_client_ping_gets_pong(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {},
        database_path=str(tmp_path / "c.db"),
        stt_providers=("simulated",),
        llm_providers=("simulated",),
        tts_providers=("simulated",),
    )
    async with serving(settings) as (_, port):
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"http://127.0.0.1:{port}/ws/pinger", autoping=False)
            await ws.receive()  # ready
            for i in range(3):
                await ws.ping(f"p{i}".encode())
                msg = await ws.receive(timeout=2)
                assert msg.type is aiohttp.WSMsgType.PONG and msg.data == f"p{i}".encode()
            await ws.close()


async def test_direct_audio_keeps_each_sessions_log_context(tmp_path: Path, monkeypatch) -> None:
    """Audio handed from the parser straight to the Session (server/transports/direct.py) runs in
    its own connection's context: what a turn logs carries that session's id, not none
    and not another session's."""
    import pipelines.stt.simulated as simulated
    from admin.context import session_id_var

    seen: list[tuple[str, str | None]] = []
    finalize = simulated.SimulatedSTTStream.finalize

    async def spy(self):  # type: ignore[no-untyped-def]
        seen.append((asyncio.current_task().get_name(), session_id_var.get()))  # type: ignore[union-attr]
        return await finalize(self)

    monkeypatch.setattr(simulated.SimulatedSTTStream, "finalize", spy)
    settings = Settings.from_env(
        {},
        database_path=str(tmp_path / "c.db"),
        stt_providers=("simulated",),
        llm_providers=("simulated",),
        tts_providers=("simulated",),
        endpoint_silence_ms=200,
    )
    speech = (Path(__file__).parents[2] / "loadtest" / "speech.wav").read_bytes()[44:]

    async def talk(http: aiohttp.ClientSession, port: int, sid: str) -> None:
        async with http.ws_connect(f"http://127.0.0.1:{port}/ws/{sid}") as ws:
            await ws.receive()  # ready
            for i in range(0, len(speech) - 639, 640):
                await ws.send_bytes(speech[i : i + 640])
                await asyncio.sleep(0.002)
            for _ in range(25):  # 500 ms of silence ends the turn
                await ws.send_bytes(bytes(640))
                await asyncio.sleep(0.002)
            async with asyncio.timeout(5):
                while (await ws.receive_json())["type"] != "transcript":
                    pass

    async with serving(settings) as (_, port), aiohttp.ClientSession() as http:
        await asyncio.gather(talk(http, port, "ctx-one"), talk(http, port, "ctx-two"))
    assert sorted(str(sid) for _, sid in seen) == ["ctx-one", "ctx-two"], seen


async def test_a_stalled_reader_is_aborted_even_when_its_owner_cancels_the_watchdog() -> None:
    """The close ends the transport's receive loop, whose owner then cancels the watchdog
    while the close frame still waits behind a full socket: the connection is dropped all
    the same (before, the socket stayed open for as long as the peer kept it)."""
    ws, traffic = FakePeer(), Traffic()
    ws.close_blocks = True
    task = asyncio.create_task(watch(ws, traffic, ["queued"], "s", FAST))
    await asyncio.sleep(FAST.stall_s + 3 * FAST.tick_s)  # by now inside close()
    assert not task.done() and not ws.aborted
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert ws.aborted == 1


async def test_a_client_that_stops_reading_loses_its_connection(
    tmp_path: Path, monkeypatch
) -> None:
    """The real app, a client with a 4 KB receive buffer asking for spoken replies and
    never reading: the server's socket buffer is bounded, the watchdog closes the session,
    and the TCP connection is gone (reset), not left open behind an unflushable buffer."""
    import socket as socket_mod

    from loadtest.wire import handshake_request, masked_frame
    from server.transports.websocket import SEND_BUFFER_BYTES

    monkeypatch.setattr(ws_browser, "LIVENESS", LivenessConfig(tick_s=0.2, stall_s=1.0))
    settings = Settings.from_env(
        {},
        database_path=str(tmp_path / "c.db"),
        stt_providers=("simulated",),
        llm_providers=("simulated",),
        tts_providers=("simulated",),
    )
    async with serving(settings) as (app, port):
        loop = asyncio.get_running_loop()
        sock = socket_mod.socket()
        sock.setsockopt(socket_mod.SOL_SOCKET, socket_mod.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        request, _ = handshake_request("127.0.0.1", port, "/ws/stall-test")
        await loop.sock_sendall(sock, request)
        # Replies at 48 kHz: three times the bytes of 16 kHz, so the buffers fill sooner.
        start = {"type": "start", "output_sample_rate": 48000}
        await loop.sock_sendall(sock, masked_frame(1, json.dumps(start).encode()))
        engine = app[ENGINE]
        reset_after = None
        t0 = loop.time()
        try:
            async with asyncio.timeout(60):
                k = 0
                while reset_after is None:
                    text = json.dumps({"type": "text", "text": f"a long story {k}"})
                    try:
                        await loop.sock_sendall(sock, masked_frame(1, text.encode()))
                    except OSError:
                        reset_after = loop.time() - t0
                    k += 1
                    await asyncio.sleep(0.5)
        finally:
            sock.close()
        # Audio at real time fills 2 x SEND_BUFFER_BYTES in seconds, then the stall and
        # the watchdog's tick: far from the minutes a 4 MB autotuned buffer took.
        assert SEND_BUFFER_BYTES <= 256 * 1024
        assert reset_after < 40
        async with asyncio.timeout(3):
            while engine.lifecycle.sessions:  # noqa: ASYNC110 (an app-owned set)
                await asyncio.sleep(0.02)

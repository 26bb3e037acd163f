"""WebRTC (server/transports/webrtc.py) against a real aiortc peer on loopback: typed and
voice turns, credentials, bad offers, and peers that never connect or vanish, each ending
the session within bounded time with nothing left behind."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from audio.resample import resample
from pipelines.registry import Providers
from server.app import create_app
from server.appkeys import ENGINE
from server.settings import Settings
from server.transports import webrtc
from tests.fakes_engine import ScriptedLLM, ScriptedSTT, ToneTTS
from tests.webrtc_peer import WebRTCPeer

REPLY = "Spaced repetition works. What will you review first?"


class SineTTS(ToneTTS):
    """A 440 Hz tone per sentence (Opus keeps a tone; it filters ToneTTS's DC away)."""

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.pieces.append(text)
        n = int(self.sample_rate * self.seconds)
        t = np.arange(n) / self.sample_rate
        tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()
        for i in range(4):
            await asyncio.sleep(0)
            yield tone[i * len(tone) // 4 : (i + 1) * len(tone) // 4]


ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, providers: Providers | None = None, **overrides: object
) -> AsyncIterator[tuple[web.Application, str]]:
    settings = Settings.from_env({}, database_path=str(tmp_path / "c.db"), **overrides)
    if providers is None:
        stt = ScriptedSTT(["tell me about spaced repetition"], interim_every=5)
        providers = Providers(stt=stt, llm=ScriptedLLM(REPLY), tts=SineTTS(0.4))
    app = create_app(settings, providers=providers)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def ended(app: web.Application, timeout: float = 10) -> None:
    lifecycle = app[ENGINE].lifecycle
    async with asyncio.timeout(timeout):
        while lifecycle.sessions or lifecycle.transports or lifecycle._serving:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def webrtc_tasks() -> list[asyncio.Task]:
    """Tasks of aiortc/aioice or of a conversation still running."""
    out = []
    for task in asyncio.all_tasks():
        code = task.get_coro()
        name = getattr(code, "__qualname__", "") + " " + str(getattr(code, "__module__", ""))
        where = getattr(getattr(code, "cr_code", None), "co_filename", "")
        if "aiortc" in where or "aioice" in where or "serve" in task.get_name() or "RTC" in name:
            out.append(task)
    return out


async def test_a_typed_turn_and_a_push_to_talk_turn(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, base), aiohttp.ClientSession() as http:
        peer = WebRTCPeer(base, "rtc-1", mode="push_to_talk")
        try:
            ready = await peer.connect(http)
            assert ready["session_id"] == "rtc-1" and ready["mode"] == "push_to_talk"
            assert ready["transport"] == "webrtc" and ready["learner_token"]
            assert peer.answer["ice_servers"] == []

            peer.send({"type": "text", "text": "and interleaving?"})
            done = await peer.until("response_done")
            assert done["text"] == REPLY
            await peer.until("audio_end")

            peer.send({"type": "talk_start"})
            peer.speak(b"\x01\x02" * 48000)  # half a second
            await asyncio.sleep(0.6)
            peer.send({"type": "talk_end"})
            final = await peer.until("transcript")
            while not final["final"]:
                final = await peer.until("transcript")
            assert final["text"] == "tell me about spaced repetition"
            await peer.until("audio_end")
            await asyncio.sleep(0.5)  # the last of the reply's audio, played in real time
            assert peer.loud_ms() >= 1200, (
                peer.loud_ms(),
                len(peer.heard),
            )  # two replies of 0.4 s a sentence

            peer.send({"type": "end"})
            assert (await peer.until("summary"))["text"]
            await ended(app)
        finally:
            await peer.close()


async def test_the_credential_is_checked_like_the_websockets(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, base), aiohttp.ClientSession() as http:
        first = WebRTCPeer(base, "rtc-mine")
        try:
            token = (await first.connect(http))["learner_token"]
        finally:
            await first.close()
        await ended(app)
        bad = WebRTCPeer(base, "rtc-mine", token="not-a-token")
        stranger = WebRTCPeer(base, "rtc-mine")  # a new anonymous learner
        owner = WebRTCPeer(base, "rtc-mine", token=token)
        try:
            assert await bad.offer(http) == 401
            assert bad.answer["error"]["code"] == "invalid_token"
            assert await stranger.offer(http) == 404
            assert stranger.answer["error"]["code"] == "session_not_found"
            ready = await owner.connect(http)
            assert "learner_token" not in ready
            await owner.close()
            await ended(app)
            # The credential may come as a bearer header instead (the web client's way).
            header = WebRTCPeer(base, "rtc-mine")
            http.headers["Authorization"] = f"Bearer {token}"
            try:
                assert "learner_token" not in await header.connect(http)
            finally:
                del http.headers["Authorization"]
                await header.close()
        finally:
            for peer in (bad, stranger, owner):
                await peer.close()
        await ended(app)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"sdp": "this is not SDP", "type": "offer", "session_id": "s"}, "invalid_sdp"),
        ({"sdp": "v=0\r\n", "type": "offer", "session_id": "s"}, "invalid_sdp"),
        ({"sdp": "v=0\r\n", "type": "answer", "session_id": "s"}, "invalid_sdp"),
        ({"sdp": "v=0\r\n", "session_id": "../etc"}, "invalid_session"),
        ({"sdp": "v=0\r\n", "session_id": "s", "mode": "karaoke"}, "invalid_message"),
        ([1, 2], "invalid_json"),
    ],
)
async def test_a_bad_offer_gets_a_400_and_nothing_is_left(tmp_path: Path, body, code) -> None:
    async with serving(tmp_path) as (app, base), aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/webrtc/offer", json=body) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == code
        await ended(app, 5)
        assert not app[ENGINE].lifecycle.sessions


async def test_an_offer_without_a_data_channel_is_refused(tmp_path: Path) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection

    async with serving(tmp_path) as (app, base), aiohttp.ClientSession() as http:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.addTransceiver("audio")
            await pc.setLocalDescription(await pc.createOffer())
            body = {"sdp": pc.localDescription.sdp, "type": "offer", "session_id": "rtc-nodc"}
            async with http.post(f"{base}/api/webrtc/offer", json=body) as resp:
                assert resp.status == 400
                assert "data channel" in (await resp.json())["error"]["message"]
        finally:
            await pc.close()
        await ended(app, 5)


async def test_maintenance_refuses_with_a_503(tmp_path: Path) -> None:
    async with serving(tmp_path, max_sessions=1) as (app, base), aiohttp.ClientSession() as http:
        first = WebRTCPeer(base, "rtc-a")
        second = WebRTCPeer(base, "rtc-b")
        try:
            await first.connect(http)
            assert await second.offer(http) == 503
            assert second.answer["error"]["code"] == "unavailable"
        finally:
            await first.close()
            await second.close()
        await ended(app)


async def test_a_peer_that_never_connects_ends_its_session(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """The answer is never applied: ICE never completes and the data channel never opens."""
    monkeypatch.setattr(webrtc, "CHANNEL_OPEN_TIMEOUT_S", 1.0)
    caplog.set_level("INFO", logger="server.transports.webrtc")
    async with serving(tmp_path) as (app, base), aiohttp.ClientSession() as http:
        await _warm_up(http, base, app)
        tasks, fds = len(asyncio.all_tasks()), open_fds()
        peer = WebRTCPeer(base, "rtc-silent")
        try:
            await peer.pc.setLocalDescription(await peer.pc.createOffer())
            body = {"sdp": peer.pc.localDescription.sdp, "type": "offer", "session_id": "rtc-s"}
            async with http.post(f"{base}/api/webrtc/offer", json=body) as resp:
                assert resp.status == 200
            assert app[ENGINE].lifecycle.sessions
            await ended(app, 5)
        finally:
            await peer.close()
        await _settle()
        assert len(asyncio.all_tasks()) <= tasks, webrtc_tasks()
        assert open_fds() <= fds
    assert "data channel never opened" in caplog.text


def _wrong_fingerprint(sdp: str) -> str:
    """The offer with another certificate's fingerprint: DTLS cannot verify the peer."""
    lines = []
    for line in sdp.splitlines():
        if line.startswith("a=fingerprint:sha-256 "):
            line = "a=fingerprint:sha-256 " + ":".join(["AB"] * 32)
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _unreachable(sdp: str) -> str:
    """The SDP with its candidates moved to a UDP port nobody listens on (applied to the
    offer and the answer, neither side can reach the other)."""
    from tests.udp_relay import rewrite

    return rewrite(sdp, ("127.0.0.1", 9))


@pytest.mark.parametrize(
    ("edit", "reasons"),
    [
        (_wrong_fingerprint, ("peer connection failed",)),
        (_unreachable, ("data channel never opened", "peer connection failed")),
    ],
    ids=["dtls-fails", "ice-fails"],
)
async def test_a_connection_that_cannot_be_made_ends_its_session(
    tmp_path: Path, monkeypatch, caplog, edit, reasons
) -> None:
    monkeypatch.setattr(webrtc, "CHANNEL_OPEN_TIMEOUT_S", 3.0)
    caplog.set_level("INFO", logger="server.transports.webrtc")
    async with serving(tmp_path) as (app, base), aiohttp.ClientSession() as http:
        await _warm_up(http, base, app)
        tasks, fds = len(asyncio.all_tasks()), open_fds()
        peer = WebRTCPeer(base, "rtc-fails")
        try:
            # The offer itself is fine.
            back = edit if edit is _unreachable else None
            assert await peer.offer(http, path=edit, back=back) == 200
            assert app[ENGINE].lifecycle.sessions
            await ended(app, 10)
        finally:
            await peer.close()
        await _settle()
        assert len(asyncio.all_tasks()) <= tasks, webrtc_tasks()
        assert open_fds() <= fds
    ended_lines = [r.getMessage() for r in caplog.records if "session ended" in r.getMessage()]
    assert any(reason in line for line in ended_lines for reason in reasons), ended_lines


async def test_a_peer_that_closes_ends_its_session(tmp_path: Path, caplog) -> None:
    caplog.set_level("INFO", logger="server.transports.webrtc")
    async with serving(tmp_path) as (app, base), aiohttp.ClientSession() as http:
        await _warm_up(http, base, app)
        tasks, fds = len(asyncio.all_tasks()), open_fds()
        peer = WebRTCPeer(base, "rtc-bye")
        await peer.connect(http)
        await peer.close()
        await ended(app, 5)
        await _settle()
        assert len(asyncio.all_tasks()) <= tasks, webrtc_tasks()
        assert open_fds() <= fds
    assert "webrtc session ended" in caplog.text


async def test_a_peer_that_vanishes_ends_its_session(tmp_path: Path, monkeypatch, caplog) -> None:
    """The peer process is killed (no DTLS or SCTP goodbye): its audio stops, and the
    session ends within the liveness bound."""
    monkeypatch.setattr(
        webrtc,
        "LIVENESS",
        webrtc.LivenessConfig(tick_s=0.25, idle_ping_s=0.5, idle_close_s=1.5, stall_s=5),
    )
    caplog.set_level("INFO")
    async with serving(tmp_path) as (app, base):
        await asyncio.sleep(0)
        tasks, fds = len(asyncio.all_tasks()), open_fds()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _VANISHING_PEER,
            base,
            env=env,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            assert child.stdout is not None
            async with asyncio.timeout(20):
                line = await child.stdout.readline()
            assert json.loads(line)["type"] == "ready", line
            assert app[ENGINE].lifecycle.sessions
            child.send_signal(signal.SIGKILL)
            await child.wait()
            loop = asyncio.get_running_loop()
            gone_at = loop.time()
            await ended(app, 10)
            assert loop.time() - gone_at < 5
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        await _settle()
        assert len(asyncio.all_tasks()) <= tasks, webrtc_tasks()
        assert open_fds() <= fds
    assert "client not responding" in caplog.text


async def test_a_server_shutdown_says_so_and_closes_the_peer(tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        peer = WebRTCPeer("", "rtc-shutdown")
        try:
            async with serving(tmp_path) as (app, base):
                peer.base_url = base
                await peer.connect(http)
            # runner.cleanup() has run: every session closed (1001), nothing left serving.
            goodbye = await peer.until("close", 5)
            assert goodbye["code"] == 1001 and goodbye["reason"] == "server shutting down"
            assert not app[ENGINE].lifecycle.sessions and not app[ENGINE].lifecycle._serving
        finally:
            await peer.close()


_VANISHING_PEER = """
import asyncio, json, sys
import aiohttp
from tests.webrtc_peer import WebRTCPeer

async def main():
    async with aiohttp.ClientSession() as http:
        peer = WebRTCPeer(sys.argv[1], "rtc-vanish")
        ready = await peer.connect(http)
        print(json.dumps(ready), flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def _warm_up(http: aiohttp.ClientSession, base: str, app: web.Application) -> None:
    """One whole conversation first: imports, caches and pools are made once."""
    peer = WebRTCPeer(base, "rtc-warm")
    try:
        await peer.connect(http)
    finally:
        await peer.close()
    await ended(app)
    await _settle()


async def _settle() -> None:
    await asyncio.sleep(0.5)
    gc.collect()


# --------------------------------------------------------------- the real models, slow
SCRIPT = "Today I learned that spaced repetition helps me remember new vocabulary."


@pytest.fixture(scope="module")
def voice_server(tmp_path_factory):
    from tests.server_process import ServerProcess

    proc = ServerProcess(tmp_path_factory.mktemp("webrtc")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def speech48k() -> bytes:
    from tests.speech import silence, synth

    return resample(silence(0.4) + synth(SCRIPT) + silence(1.5), 16000, 48000)


async def answered(peer: WebRTCPeer, *, audio_end: bool = True) -> tuple[str, dict]:
    """The final transcript and the finished reply, once more than a second of the reply's
    voice has come back (played in real time) and, with `audio_end`, all of it was sent."""
    async with asyncio.timeout(60):
        while not (m := await peer.until("transcript"))["final"]:
            pass
        done = await peer.until("response_done")
        await peer.until_loud(1020, timeout=20)
        if audio_end:
            await peer.until("audio_end")
    return m["text"], done


async def spoken_turn(
    peer: WebRTCPeer, speech: bytes, *, audio_end: bool = True
) -> tuple[str, dict]:
    """Speak (in real time, as Opus), then `answered`."""
    peer.speak(speech)
    return await answered(peer, audio_end=audio_end)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["continuous", "push_to_talk"])
async def test_a_spoken_turn_with_the_real_models(voice_server, speech48k, mode) -> None:
    """Piper's speech in, through Opus, to Whisper tiny; the reply's voice comes back."""
    from tests.speech import wer

    async with aiohttp.ClientSession() as http:
        peer = WebRTCPeer(voice_server.http, f"rtc-real-{mode}", mode=mode)
        try:
            await peer.connect(http, timeout=30)
            if mode == "push_to_talk":
                peer.send({"type": "talk_start"})
                peer.speak(speech48k)
                await asyncio.sleep(len(speech48k) / 96000 - 1.0)
                peer.send({"type": "talk_end"})
                text, done = await answered(peer)
            else:
                text, done = await spoken_turn(peer, speech48k)
            assert wer(SCRIPT, text) <= 0.2, text
            assert "repetition" in done["text"].lower()
            peer.send({"type": "end"})
            assert "repetition" in (await peer.until("summary", 10))["text"].lower()
        finally:
            await peer.close()


def _through(relay: Any) -> dict[str, Any]:
    """Edits that send a peer's traffic through `relay` (tests/udp_relay.py)."""
    from tests.udp_relay import host_candidate, rewrite

    def path(offer: str) -> str:
        relay.client_addr = host_candidate(offer)
        return rewrite(offer, relay.b)

    def back(answer: str) -> str:
        relay.server_addr = host_candidate(answer)
        return rewrite(answer, relay.a)

    return {"path": path, "back": back}


# One sentence (so the turn does not end at a full stop) of 39 words: each word Whisper
# tiny mishears is 2.6 points of WER, so losing 5% of the packets must cost four words
# before the test fails. With 24 words, three words (two misheard, like "bees" -> "piece"
# and "nectar of" -> "neck or") failed it in about 1 run in 10.
LOSS_SCRIPT = (
    "Today I learned that honey never goes bad because it has very little water, "
    "and that bees make it from the nectar of flowers, which they carry back to the hive "
    "and dry with their wings for many days."
)


@pytest.mark.slow
async def test_a_conversation_survives_five_percent_packet_loss(voice_server) -> None:
    """The same spoken turn through a UDP relay, without loss and dropping 5% of the
    datagrams each way: the turn is transcribed and answered, over a second of the reply's
    voice comes back, and the transcript's word error rate is within 10 points of the
    lossless run's."""
    from tests.speech import silence, synth, wer
    from tests.udp_relay import LossyRelay, host_address

    speech = resample(silence(0.4) + synth(LOSS_SCRIPT) + silence(1.5), 16000, 48000)
    rates: dict[float, float] = {}
    heard: dict[float, str] = {}
    async with aiohttp.ClientSession() as http:
        for loss in (0.0, 0.05):
            relay = LossyRelay(loss, host=host_address())
            await relay.start()
            peer = WebRTCPeer(voice_server.http, f"rtc-loss-{int(loss * 100)}", mode="continuous")
            try:
                await peer.connect(http, timeout=30, **_through(relay))
                text, done = await spoken_turn(peer, speech, audio_end=False)
                rates[loss], heard[loss] = wer(LOSS_SCRIPT, text), text
                assert done["text"], "no reply"
            finally:
                await peer.close()
                relay.close()
            if loss:
                dropped = relay.counts.dropped / (relay.counts.dropped + relay.counts.forwarded)
                assert 0.03 < dropped < 0.07, relay.counts
    assert rates[0.0] <= 0.2, (rates, heard)
    assert rates[0.05] <= rates[0.0] + 0.10, (rates, heard)

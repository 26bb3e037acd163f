"""The streaming voice loop end to end: a real server process on embedded defaults
(Whisper tiny.en, the learning coach, Piper), real speech streamed at real-time pace over
the WebSocket, and the capture found in SQLite afterwards."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import pytest
import websockets

from server.client import Conversation
from tests.server_process import ServerProcess
from tests.speech import silence, synth, wer

pytestmark = pytest.mark.slow

SCRIPT = "Today I learned that spaced repetition helps me remember new vocabulary."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("voice")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def speech() -> bytes:
    return silence(0.4) + synth(SCRIPT)


def _kinds(events):
    return [e["type"] for e in events]


async def test_continuous_turn(server, speech):
    conv = await Conversation.connect(server.ws, "e2e-continuous", mode="continuous")
    assert conv.ready["protocol"] == 1 and conv.ready["mode"] == "continuous"
    seen_at: list[tuple[float, dict]] = []
    speech_done = time.monotonic() + len(speech) / 32000

    result = await conv.turn(speech, on_event=lambda e: seen_at.append((time.monotonic(), e)))
    kinds = _kinds(result.events)
    assert kinds.count("vad") >= 2
    assert result.events[0] == {"type": "vad", "speaking": True}
    interims = [(t, e) for t, e in seen_at if e["type"] == "transcript" and not e["final"]]
    assert interims, "no interim transcript"
    assert interims[0][0] < speech_done, "first interim came only after the speech ended"
    assert wer(SCRIPT, result.final_transcript) <= 0.2, result.final_transcript
    assert kinds.index("response_delta") < kinds.index("response_done")
    assert kinds.index("audio_start") < kinds.index("audio_end")
    assert result.audio_frames > 0 and len(result.audio) > 16000  # > 0.5 s of reply audio
    assert "repetition" in result.reply.lower()  # the key idea is reflected back
    summary = await conv.close()
    assert "repetition" in summary.lower()

    await asyncio.sleep(0.6)  # capture batches flush every 200 ms
    with sqlite3.connect(server.db_path) as db:
        rows = db.execute(
            "SELECT user_text, agent_text FROM captures WHERE session_id = ?", ("e2e-continuous",)
        ).fetchall()
    assert len(rows) == 1
    assert wer(SCRIPT, rows[0][0]) <= 0.2 and rows[0][1] == result.reply


async def test_push_to_talk_turn(server, speech):
    conv = await Conversation.connect(server.ws, "e2e-ptt", mode="push_to_talk")
    result = await conv.turn(speech, mode="push_to_talk")
    assert wer(SCRIPT, result.final_transcript) <= 0.2, result.final_transcript
    assert result.reply and result.audio_frames > 0
    kinds = _kinds(result.events)
    assert kinds.index("transcript") < kinds.index("response_done") < kinds.index("audio_end")
    await conv.close()


async def test_barge_in_stops_reply_audio(server, speech):
    conv = await Conversation.connect(server.ws, "e2e-barge", mode="continuous")
    first = await conv.turn(speech)
    assert first.audio_frames > 0
    # Second turn: as soon as reply audio starts, talk over it.
    ws = conv.ws
    frames = [speech[i : i + 640] for i in range(0, len(speech), 640)]
    for f in frames:
        await ws.send(f)
        await asyncio.sleep(0.02)
    for _ in range(40):  # 0.8 s of silence ends the turn
        await ws.send(bytes(640))
        await asyncio.sleep(0.02)
    events: list[dict] = []
    audio_turn = None
    audio_after_interrupt = 0
    interrupted = None
    sender: asyncio.Task | None = None

    async def talk_over():
        for f in frames:
            await ws.send(f)
            await asyncio.sleep(0.02)
        for _ in range(40):
            await ws.send(bytes(640))
            await asyncio.sleep(0.02)

    async with asyncio.timeout(30):
        async for msg in ws:
            if isinstance(msg, bytes):
                if interrupted is not None:
                    audio_after_interrupt += 1
                if sender is None and audio_turn is not None:
                    sender = asyncio.create_task(talk_over())
                continue
            e = json.loads(msg)
            events.append(e)
            if e["type"] == "audio_start" and audio_turn is None:
                audio_turn = e["turn_id"]
            elif e["type"] == "interrupted":
                interrupted = e
            elif e["type"] == "audio_start" and interrupted is not None:
                break  # the reply to the interrupting turn
    assert interrupted is not None and interrupted["turn_id"] == audio_turn
    # Frames already on the wire when the server decided may still arrive; the server
    # paces audio ~300 ms ahead, so at most a few 100 ms chunks can follow.
    assert audio_after_interrupt <= 4
    if sender is not None:
        await sender
    await conv.close()


async def test_bad_input_gets_errors_and_session_goes_on(server):
    async with websockets.connect(f"{server.ws}/ws/e2e-bad?token={server.learner()}") as ws:
        assert json.loads(await ws.recv())["type"] == "ready"

        async def expect_error(payload, code):
            await ws.send(payload)
            msg = json.loads(await ws.recv())
            assert msg["type"] == "error" and msg["code"] == code, msg

        await expect_error("not json", "invalid_json")
        await expect_error("[1,2]", "invalid_json")
        await expect_error("[" * 100000, "invalid_json")
        await expect_error(json.dumps({"type": "dance"}), "unknown_type")
        await expect_error(json.dumps({"type": "start", "sample_rate": 11025}), "invalid_message")
        await expect_error(json.dumps({"type": "start", "mode": "shout"}), "invalid_message")
        await expect_error(json.dumps({"type": "text", "text": "x" * 5000}), "text_too_long")
        await expect_error(json.dumps({"type": "talk_start"}), "invalid_message")
        await expect_error(b"\x00\x01\x02", "invalid_audio")
        await expect_error(bytes(70000), "audio_too_large")
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.send(json.dumps({"type": "start", "tts": False}))
        assert json.loads(await ws.recv())["tts"] is False
        await ws.send(json.dumps({"type": "text", "text": "I learned about black holes"}))
        got = []
        while not got or got[-1]["type"] != "response_done":
            got.append(json.loads(await ws.recv()))
        assert "black holes" in got[-1]["text"].lower()


async def test_invalid_session_id_is_closed_with_4400(server):
    async with websockets.connect(server.ws + "/ws/bad%20id!") as ws:
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd.code == 4400


def test_http_edges(server):
    status, body = server.get_json("/")
    assert status == 200 and body["status"] == "healthy"
    assert body["service"] == "learning-voice-agent"
    status, body = server.post_json("/api/conversation", {"text": "I learned about volcanoes"})
    assert status == 200 and "volcanoes" in body["agent_text"].lower()
    sid, mine = body["session_id"], {"Authorization": f"Bearer {body['learner_token']}"}
    status, again = server.post_json(
        "/api/conversation", {"session_id": sid, "text": "Also about earthquakes"}, mine
    )
    assert status == 200 and again["session_id"] == sid
    for bad, code in (
        ({"text": ""}, "invalid_text"),
        ({"text": 5}, "invalid_text"),
        ({"text": "hi", "session_id": "no spaces"}, "invalid_session_id"),
    ):
        status, body = server.post_json("/api/conversation", bad)
        assert status == 400 and body["error"]["code"] == code
    status, body = server.get_json("/no/such/route")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_graceful_shutdown_flushes_captures(tmp_path):
    proc = ServerProcess(tmp_path).start()
    try:
        mine = {"Authorization": f"Bearer {proc.learner()}"}
        for i in range(5):
            status, _ = proc.post_json(
                "/api/conversation", {"session_id": "flush", "text": f"fact number {i}"}, mine
            )
            assert status == 200
    finally:
        code = proc.stop()
    assert code == 0, proc.logs()
    with sqlite3.connect(proc.db_path) as db:
        (n,) = db.execute("SELECT count(*) FROM captures WHERE session_id='flush'").fetchone()
    assert n == 5

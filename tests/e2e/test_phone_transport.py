"""The Twilio Media Streams handler in-process (aiohttp test server, in-test providers, the
phone simulator as the client): session ids from the call, marks and what is remembered,
`clear` and no audio of a cleared reply, hang-up, and input the handler must survive."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest
import websockets
from aiohttp.test_utils import TestServer

from loadtest.phone_sim import PhoneCall
from pipelines.registry import Providers
from server.app import create_app
from server.appkeys import ENGINE, IDENTITY, SETTINGS, STORAGE
from server.settings import Settings
from server.transports.twilio_media import caller_number, session_id_for
from tests.fakes_engine import ScriptedLLM, ScriptedSTT, ToneTTS
from tests.speech import silence, synth

REPLY = "One two three four. Five six seven eight. Nine ten eleven twelve."


@pytest.fixture
async def phone(tmp_path):
    stt = ScriptedSTT(["count for me", "hold on please"], interim_every=1000)
    providers = Providers(stt=stt, llm=ScriptedLLM(REPLY), tts=ToneTTS(1.0))
    settings = Settings.from_env(
        {}, twilio_validate_signature=False, database_path=str(tmp_path / "c.db")
    )
    server = TestServer(create_app(settings, providers=providers))
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def _url(server: TestServer) -> str:
    return f"ws://127.0.0.1:{server.port}/twilio/stream"


async def _history(server: TestServer, session_id: str) -> list:
    captures = server.app[STORAGE].captures
    for _ in range(30):
        rows = await captures.history(session_id, 10)
        if rows:
            return rows
        await asyncio.sleep(0.1)
    return []


def test_session_ids_derive_from_the_call():
    assert session_id_for("CA0123456789abcdef0123456789abcdef") == (
        "call-CA0123456789abcdef0123456789abcdef"
    )
    assert session_id_for("CA/../x y") == "call-CA____x_y"
    assert len(session_id_for("CA" + "z" * 200)) <= 64
    assert session_id_for("").startswith("call-") and len(session_id_for("")) > 10


async def test_barge_in_clears_drops_the_reply_and_remembers_the_acknowledged_part(phone):
    async with PhoneCall(_url(phone), call_sid="CAbarge") as call:
        _, end = await call.say(synth("Count for me please.", 8000) + silence(0.8, 8000))
        first = await call.wait_media(end - 0.8, timeout=10)
        await asyncio.sleep(max(0.0, first + 1.5 - time.monotonic()))
        talk = synth("Hold on, I want to ask something about those numbers.", 8000)
        start, _ = await call.say(talk + silence(1.0, 8000))
        await call.wait_media(call.rx.clears[-1] if call.rx.clears else start, timeout=10)
        await asyncio.sleep(0.5)
        hung_up = time.monotonic()
    rx = call.rx
    # One cut for the barge-in (a second one may come for the next reply at hang-up);
    # the clears before it are the agent yielding (ducked, then paused).
    cuts = rx.cuts()
    assert cuts[0] > start and all(t > hung_up for t in cuts[1:])
    clear_t = cuts[0]
    assert all(start < t < clear_t for t in rx.clears if t < clear_t)
    cut_turn = rx.turns()[0]
    later = [rx.media_turn[i] for i, (t, _) in enumerate(rx.media) if t > clear_t]
    assert later and cut_turn not in later  # the reply to the interruption, nothing else
    # What played ducked under the caller's voice is not remembered as heard: the reply
    # counts as heard up to the acknowledgement before the agent first yielded (the duck).
    ducked_t = rx.yields()[0]
    assert start < ducked_t < clear_t

    def words_acked_before(t: float) -> int:
        acked = [
            int(name.split("-")[1].split(".")[0])
            for at, name in rx.acks
            if at < t and name.startswith(f"t{cut_turn}-") and "-end" not in name
        ]
        whole, part = divmod(max(acked, default=0) / 1000, 1.0)  # 1 s, four words a sentence
        return 4 * int(whole) + int(4 * part)

    rows = await _history(phone, "call-CAbarge")
    first_row = rows[0] if rows[0].user_text == "count for me" else rows[-1]
    heard = first_row.agent_text.split()
    # Never more than was acknowledged when the agent ducked, and at least what was
    # acknowledged when the caller began (the server decides in between, on the marks it
    # has read by then). +-1 word: the resampler's delay shifts the sentence boundaries on
    # the reply's audio timeline by a few tens of ms.
    low, high = words_acked_before(start), words_acked_before(ducked_t)
    assert low - 1 <= len(heard) <= high + 1, (heard, low, high)
    assert len(heard) < len(REPLY.split())
    assert REPLY.split()[: len(heard)] == heard
    assert first_row.metadata["interrupted"] is True


async def test_hang_up_remembers_what_was_heard_and_bad_messages_are_ignored(phone):
    async with PhoneCall(_url(phone), call_sid="CAhangup") as call:
        ws = call._ws
        assert ws is not None
        junk = [
            "{", "[]", '{"event": 5}', '{"event":"media","media":{"payload":"!!"}}',
            '{"event":"media","media":{"payload":' + json.dumps("A" * 20000) + "}}",
            '{"event":"mark","mark":{"name":"t99999999999-1"}}', '{"event":"mark"}',
            '{"event":"start"}', '{"event":"dtmf","dtmf":{"digit":"#"}}',
            "[" * 100000,
        ]  # fmt: skip
        for message in junk:
            await ws.send(message)
        _, end = await call.say(synth("Count for me please.", 8000) + silence(0.8, 8000))
        first = await call.wait_media(end - 0.8, timeout=10)
        await asyncio.sleep(max(0.0, first + 0.6 - time.monotonic()))
    rows = await _history(phone, "call-CAhangup")
    assert len(rows) == 1 and rows[0].metadata["interrupted"] is True
    heard = rows[0].agent_text.split()
    assert 0 < len(heard) < 6 and REPLY.split()[: len(heard)] == heard


async def test_a_call_without_start_or_with_a_foreign_format_opens_no_session(phone):
    async with websockets.connect(_url(phone)) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call"}))
        await ws.send(json.dumps({"event": "media", "media": {"payload": "/w=="}}))
        fmt = {"encoding": "audio/l16", "sampleRate": 16000}
        await ws.send(json.dumps({"event": "start", "start": {"mediaFormat": fmt}}))
        await ws.send(json.dumps({"event": "stop"}))
        await asyncio.wait_for(ws.wait_closed(), 5)
    assert not phone.app[ENGINE].lifecycle.sessions


async def test_a_callers_captures_follow_their_number_across_calls(phone, caplog):
    """The learner of a call is a keyed hash of the caller's number: the same number finds
    its earlier calls, another number does not, and the number itself is stored nowhere."""
    caplog.set_level(logging.DEBUG)
    number = "+15550102030"
    for sid in ("CAfirst", "CAsecond"):
        async with PhoneCall(_url(phone), call_sid=sid, parameters={"from": number}) as call:
            _, end = await call.say(synth("Count for me please.", 8000) + silence(0.8, 8000))
            await call.wait_media(end - 0.8, timeout=10)
        assert await _history(phone, f"call-{sid}")
    async with PhoneCall(_url(phone), call_sid="CAother", parameters={"from": "+15559990000"}):
        pass
    app = phone.app
    captures = app[STORAGE].captures
    caller = app[IDENTITY].caller(number)
    listed = {s.session_id for s in await captures.list_sessions(caller.id, 10)}
    assert listed == {"call-CAfirst", "call-CAsecond"}
    other = app[IDENTITY].caller("+15559990000")
    assert await captures.session_owner("call-CAother") == other.id != caller.id
    assert "phone call started" in caplog.text and "5550102030" not in caplog.text
    db = Path(app[SETTINGS].database_path)
    for path in (db, db.with_name(db.name + "-wal")):  # the file and its write-ahead log
        stored = await asyncio.to_thread(path.read_bytes)
        assert stored and b"5550102030" not in stored


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        ("+15550102030", "+15550102030"),
        (" +442071234567 ", "+442071234567"),
        ("+266696687", None),  # ANONYMOUS
        ("+7378742833", None),  # RESTRICTED
        ("anonymous", None),
        ("Restricted", None),
        ("client:alice", None),
        ("sip:bob@example.com", None),
        ("", None),
        (None, None),
        (15550102030, None),
    ],
)
def test_only_a_real_number_names_a_caller(raw, number) -> None:
    assert caller_number(raw) == number

"""Seeded random walks over the WebSocket protocols: protocol v1 (`/ws/{session_id}`,
docs/protocol.md) and Twilio Media Streams (`/twilio/stream`, docs/phone.md).

Each walk opens one connection and takes random steps: every message type in random
order, valid and invalid fields, truncated and random JSON, non-objects, absurd nesting,
binary frames of every size around the limits (odd lengths, 64 KiB +-1) with noise or real
speech (loadtest/speech.wav, resampled) at every sample rate. After each step the walker
sends a ping and reads up to its pong, so each step's answer is known exactly:

- browser: a bad input gets exactly its documented `error` code, and nothing else does;
- phone: nothing is ever answered to bad input (Twilio would not read it), the call
  goes on, and the server counts what it ignored (`TwilioCall.ignored`) when asked;
- both: every event carries only its own session's marker: walks run two at a time, each
  session's typed text and context carry a marker of its own, and the language model
  (`EchoLLM`) repeats the turn and everything remembered, so an event, a reply or a
  context of one session reaching another is seen.

`campaign()` runs walks against the real app in this process (`create_app`, SQLite,
simulated speech, the echo model), then checks that nothing is left behind once every
connection is closed (tasks, file descriptors, traced memory: tests/integration/
test_leaks.py's approach) and that nothing was logged at ERROR or raised unhandled.
`python -m loadtest.fuzz_ws --walks 400` is the long run (`make fuzz`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import logging
import os
import random
import re
import string
import tempfile
import time
import tracemalloc
import uuid
import wave
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from audio.mulaw import mulaw_encode
from audio.resample import SUPPORTED_RATES, resample
from pipelines.ports import Exchange
from pipelines.recap import recap

SPEECH_WAV = Path(__file__).with_name("speech.wav")
MAX_FRAME = 64 * 1024
MAX_TEXT = 4000
#: Binary sizes around every limit: empty, odd, one 20 ms frame at 8/16/48 kHz, +-1, 64 KiB +-1.
SIZES = (0, 1, 2, 3, 159, 160, 161, 319, 320, 321, 639, 640, 641, 1919, 1920, 1921,
         4095, 4096, 4097, 32768, 65533, 65534, 65535, 65536, 65537, 65538, 131072)  # fmt: skip
KNOWN_TYPES = ("start", "talk_start", "talk_end", "text", "interrupt", "ping", "end")
MARKER = re.compile(r"mk(\d+)x")
STEP_TIMEOUT_S = 15.0


class EchoLLM:
    """Repeats the turn and every remembered user turn: whatever reaches the model is
    seen in the reply, so another session's words in a context cannot hide."""

    name = "echo-llm"

    async def stream(self, user_text: str, history: Sequence[Exchange]) -> AsyncIterator[str]:
        remembered = " | ".join(e.user[:80] for e in history)
        for word in f"Heard: {user_text[:200]}. Remembered: {remembered}.".split(" "):
            await asyncio.sleep(0)
            yield word + " "

    def recap(self, history: Sequence[Exchange]) -> str:
        return recap(history)


class FuzzFailure(AssertionError):
    pass


@dataclass
class WsFuzzResult:
    seed: int
    walks: int = 0
    steps: int = 0
    browser_walks: int = 0
    phone_walks: int = 0
    errors_checked: dict[str, int] = field(default_factory=dict)
    ignored_checked: int = 0
    #: Events that carried their own session's marker (each checked for another's).
    marked_events: int = 0
    warmup_walks: int = 0
    refused_streams: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    logged_errors: list[str] = field(default_factory=list)
    tasks_before: int = 0
    tasks_after: int = 0
    fds_before: int = 0
    fds_after: int = 0
    traced_growth_bytes: int = 0
    rss_growth_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- speech ------------------------------------------------------------------------------
_SPEECH: dict[int, bytes] = {}


def speech(rate: int) -> bytes:
    """loadtest/speech.wav (16 kHz) at `rate`."""
    if rate not in _SPEECH:
        with wave.open(str(SPEECH_WAV)) as w:
            pcm = w.readframes(w.getnframes())
            src = w.getframerate()
        _SPEECH[rate] = pcm if rate == src else resample(pcm, src, rate)
    return _SPEECH[rate]


# --- the browser protocol ------------------------------------------------------------------
@dataclass
class Step:
    kind: str  # for the figures
    frame: str | bytes | list[str | bytes]  # a list: sent back to back
    expect: list[str]  # error codes, in order
    pongs: int = 1  # the sync ping's pong, plus one for a `ping` step
    ends: bool = False


def _text_message(rng: random.Random, marker: str) -> Step:
    choice = rng.random()
    if choice < 0.15:
        return Step("text_too_long", _j(type="text", text="x" * (MAX_TEXT + rng.randint(1, 50))),
                    ["text_too_long"])  # fmt: skip
    if choice < 0.3:
        value = rng.choice([None, 5, 1.5, True, [], {}, ["a"]])
        return Step("text_not_string", _j(type="text", text=value), ["invalid_message"])
    if choice < 0.4:
        blank = rng.choice(["", " ", "\n\t ", "\u3000"])
        return Step("text_blank", _j(type="text", text=blank), ["invalid_message"])
    words = " ".join(rng.choice(["tell", "me", "about", "spaced", "repetition", "why", "how"])
                     for _ in range(rng.randint(1, 12)))  # fmt: skip
    text = f"{marker} {words}"
    if rng.random() < 0.1:
        text = (text + " ") * (MAX_TEXT // len(text))
        text = text[:MAX_TEXT]
    return Step("text", _j(type="text", text=text), [])


def _start_message(rng: random.Random, state: dict[str, Any]) -> Step:
    fields: dict[str, Any] = {"type": "start"}
    bad = rng.random() < 0.4
    which = rng.choice(["sample_rate", "output_sample_rate", "mode", "tts"]) if bad else None
    for name in ("sample_rate", "output_sample_rate"):
        if name == which:
            fields[name] = rng.choice([0, -1, 11025, 44100, 96000, "16000", 16000.0, True, None])
        elif rng.random() < 0.8:
            fields[name] = rng.choice(SUPPORTED_RATES)
    if which == "mode":
        fields["mode"] = rng.choice(["", "Continuous", "ptt", 1, None])
    elif rng.random() < 0.7:
        fields["mode"] = rng.choice(["continuous", "push_to_talk"])
    if which == "tts":
        fields["tts"] = rng.choice(["yes", 1, 0, None, "true"])
    elif rng.random() < 0.7:
        fields["tts"] = rng.random() < 0.3
    if bad:
        return Step(f"start_bad_{which}", _j(**fields), ["invalid_message"])
    state["rate"] = fields.get("sample_rate", 16000)
    state["mode"] = fields.get("mode", "continuous")
    return Step("start", _j(**fields), [])


def _j(**fields: Any) -> str:
    return json.dumps(fields)


def _random_text(rng: random.Random) -> str:
    alphabet = string.printable + '{}[]":,\u00e9\u4e2d\U0001f600\x00'
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))


def browser_step(rng: random.Random, state: dict[str, Any], marker: str) -> Step:
    if rng.random() < 0.08:
        return _burst(rng, state, marker)
    return _one_step(rng, state, marker)


def _burst(rng: random.Random, state: dict[str, Any], marker: str) -> Step:
    """Several steps back to back, without waiting: audio that arrives while the receive
    loop is busy takes the queued path, not the parser's direct hand-off
    (server/transports/direct.py), and the answers must still come in order."""
    frames: list[str | bytes] = []
    expect: list[str] = []
    pongs = 1
    for _ in range(rng.randint(2, 8)):
        step = _one_step(rng, state, marker)
        if step.ends or isinstance(step.frame, list):
            continue
        frames.append(step.frame)
        expect += step.expect
        pongs += step.pongs - 1
    return Step("burst", frames, expect, pongs)


def _one_step(rng: random.Random, state: dict[str, Any], marker: str) -> Step:
    roll = rng.random()
    if roll < 0.22:  # real speech at the session's rate, in chunks that are not frames
        pcm = speech(state["rate"])
        start = rng.randrange(0, len(pcm) // 2) * 2
        size = min(rng.randrange(1, 4000) * 2, len(pcm) - start, MAX_FRAME)
        return Step("speech", pcm[start : start + size], [])
    if roll < 0.38:  # binary around the limits
        size = rng.choice(SIZES) if rng.random() < 0.7 else rng.randint(0, MAX_FRAME + 4)
        data = rng.randbytes(size) if rng.random() < 0.5 else bytes(size)
        expect = ["audio_too_large"] if size > MAX_FRAME else ["invalid_audio"] if size & 1 else []
        return Step(f"binary_{'big' if size > MAX_FRAME else 'odd' if size & 1 else 'ok'}",
                    data, expect)  # fmt: skip
    if roll < 0.46:
        return _text_message(rng, marker)
    if roll < 0.53:
        return _start_message(rng, state)
    if roll < 0.63:
        kind = rng.choice(["talk_start", "talk_end", "interrupt", "ping"])
        # Push-to-talk's button in a continuous session is out of place (docs/protocol.md).
        wrong_mode = kind.startswith("talk_") and state["mode"] != "push_to_talk"
        expect = ["invalid_message"] if wrong_mode else []
        return Step(kind, _j(type=kind), expect, pongs=2 if kind == "ping" else 1)
    if roll < 0.70:  # truncated JSON of a valid message
        whole = _j(type=rng.choice(KNOWN_TYPES), text="hello", sample_rate=16000)
        return Step("truncated_json", whole[: rng.randint(0, len(whole) - 1)], ["invalid_json"])
    if roll < 0.76:  # JSON that is not an object
        frame = rng.choice(["[]", "1", '"start"', "null", "true", '[{"type":"ping"}]', "1e999"])
        return Step("not_an_object", frame, ["invalid_json"])
    if roll < 0.80:
        depth = rng.choice([100, 1000, 20000, 100000])
        return Step("deep_nesting", rng.choice("[{") * depth, ["invalid_json"])
    if roll < 0.86:
        text = _random_text(rng)
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict):
            text = "x" + text
        return Step("random_text", text, ["invalid_json"])
    if roll < 0.94:
        kind = rng.choice(["", "START", "talk", "stop", "media", 5, None, ["ping"], "pong"])
        fields = {"type": kind} if rng.random() < 0.8 else {"kind": "ping"}
        return Step("unknown_type", json.dumps(fields), ["unknown_type"])
    if roll < 0.985:  # a valid message with extra and odd fields: the extras are ignored
        return Step("extra_fields", _j(type="ping", x=[1, 2], token=None, **{"": ""}), [], 2)
    return Step("end", _j(type="end"), [], ends=True)


async def _sync(
    ws: aiohttp.ClientWebSocketResponse, pongs: int, own: int, seen: dict[str, str]
) -> list[str]:
    """Send a ping, read to its pong; the error codes seen, checking every event's marker
    (a learner credential handed over is put in `seen`)."""
    await ws.send_str('{"type":"ping"}')
    codes: list[str] = []
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while pongs:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                continue
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise FuzzFailure(f"connection ended unasked: {msg.type.name} {msg.data!r}")
            event = json.loads(msg.data)
            _check_markers(event, own)
            if "learner_token" in event:
                seen["learner_token"] = event["learner_token"]
            if event["type"] == "pong":
                pongs -= 1
            elif event["type"] == "error":
                codes.append(event["code"])
    return codes


#: Events seen carrying their own session's marker (the cross-talk check has something
#: to look at: the echo model repeats the turn and what it remembers).
MARKED = {"events": 0}


def _check_markers(event: object, own: int) -> None:
    text = json.dumps(event)
    found = MARKER.findall(text)
    for other in found:
        if int(other) != own:
            raise FuzzFailure(f"cross-talk: session {own} got session {other}'s words: {text}")
    MARKED["events"] += bool(found)


async def browser_walk(
    http: aiohttp.ClientSession,
    base: str,
    index: int,
    token: str | None,
    rng: random.Random,
    steps: int,
    result: WsFuzzResult,
) -> None:
    """One connection of session `fz-<index>` with `token`; with no token, a session of
    its own whose first message makes a new learner (docs/protocol.md), who is then
    forgotten (`DELETE /api/me`) with the credential the connection handed over."""
    seen: dict[str, str] = {}
    if token is None:
        sid = f"fz-anon-{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}"
        url = f"{base}/ws/{sid}"
    else:
        sid = f"fz-{index}"
        url = f"{base}/ws/{sid}?token={token}"
    try:
        async with http.ws_connect(url, autoping=False, max_msg_size=0) as ws:
            ready = await ws.receive_json(timeout=STEP_TIMEOUT_S)
            if ready.get("type") != "ready" or ready.get("session_id") != sid:
                raise FuzzFailure(f"not ready: {ready}")
            state: dict[str, Any] = {"rate": ready["sample_rate"], "mode": ready["mode"]}
            if token is None and rng.random() < 0.25:
                await _bad_first_start(ws, rng)
                return
            first = token is None
            for _ in range(steps):
                if first and rng.random() < 0.5:  # how clients begin: a start, valid or not
                    step = _start_message(rng, state)
                else:
                    step = browser_step(rng, state, f"mk{index}x")
                result.steps += 1
                for frame in step.frame if isinstance(step.frame, list) else [step.frame]:
                    if isinstance(frame, bytes):
                        await ws.send_bytes(frame)
                    else:
                        await ws.send_str(frame)
                if step.ends:
                    await _read_to_close(ws, index, seen)
                    return
                codes = await _sync(ws, step.pongs, index, seen)
                if codes != step.expect:
                    raise FuzzFailure(f"{step.kind}: expected errors {step.expect}, got {codes}")
                for code in codes:
                    result.errors_checked[code] = result.errors_checked.get(code, 0) + 1
                if first and step.kind not in ("ping", "extra_fields"):  # pings do not count
                    first = False
                    if "learner_token" not in seen:
                        raise FuzzFailure(f"first message {step.kind}: no credential handed over")
    finally:
        if token is None and "learner_token" in seen:
            headers = {"Authorization": f"Bearer {seen['learner_token']}"}
            async with http.delete(f"{base}/api/me", headers=headers) as resp:
                if resp.status != 200:
                    raise FuzzFailure(f"DELETE /api/me answered {resp.status}")


async def _bad_first_start(ws: aiohttp.ClientWebSocketResponse, rng: random.Random) -> None:
    """A first `start` whose token is unusable: `error` then close 4401, nothing else."""
    bad = rng.choice(["", "x", "a.b.c", 5, None, ["t"], "e30." * 3, "Bearer abc"])
    await ws.send_str(_j(type="start", token=bad))
    async with asyncio.timeout(STEP_TIMEOUT_S):
        error = await ws.receive_json()
        closed = await ws.receive()
    if error.get("type") != "error" or error.get("code") not in ("invalid_token",):
        raise FuzzFailure(f"a bad first token was answered {error}")
    if closed.type is not aiohttp.WSMsgType.CLOSE or ws.close_code != 4401:
        raise FuzzFailure(f"a bad first token was not closed 4401: {closed}")


async def _read_to_close(
    ws: aiohttp.ClientWebSocketResponse, own: int, seen: dict[str, str]
) -> None:
    summary = False
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                event = json.loads(msg.data)
                _check_markers(event, own)
                if "learner_token" in event:
                    seen["learner_token"] = event["learner_token"]
                summary = summary or event["type"] == "summary"
            elif msg.type is not aiohttp.WSMsgType.BINARY:
                break
    if not summary or ws.close_code != 1000:
        raise FuzzFailure(f"`end` answered close {ws.close_code}, summary={summary}")


# --- Twilio Media Streams --------------------------------------------------------------------
def _media(stream_sid: str, payload: object, track: str = "inbound") -> str:
    return json.dumps(
        {"event": "media", "streamSid": stream_sid, "media": {"track": track, "payload": payload}}
    )


PhoneStep = tuple[str, str | bytes, int, bool]


def phone_step(rng: random.Random, stream_sid: str, state: dict[str, Any]) -> PhoneStep:
    """(kind, frame, messages the server must count as ignored, ends the call)."""
    roll = rng.random()
    if roll < 0.35:  # speech, 20 ms of mu-law at a time (or a few frames)
        pcm = speech(8000)
        n = rng.choice([160, 160, 160, 320, 80, 1])
        start = state.setdefault("pos", 0) % (len(pcm) // 2)
        chunk = mulaw_encode(pcm[start * 2 : start * 2 + n * 2]) or b"\xff"
        state["pos"] = start + n
        return "media", _media(stream_sid, base64.b64encode(chunk).decode()), 0, False
    if roll < 0.45:
        size = rng.choice([0, 1, 159, 160, 161, 7999, 8000, 8001, 20000])
        payload = base64.b64encode(rng.randbytes(size)).decode()
        return f"media_{size}", _media(stream_sid, payload), int(size > 8000), False
    if roll < 0.5:
        return "media_outbound", _media(stream_sid, "AAAA", track="outbound"), 0, False
    if roll < 0.56:
        payload = rng.choice(["not base64!", "AAA", "====", 5, None, ["x"]])
        return "media_bad_payload", _media(stream_sid, payload), 1, False
    if roll < 0.6:
        frame = json.dumps({"event": "media", "media": rng.choice([None, "x", 5, []])})
        return "media_no_object", frame, 1, False
    if roll < 0.68:
        good = rng.random() < 0.5
        name = f"t{rng.randint(0, 9)}-{rng.randint(0, 5000)}" if good else rng.choice(
            ["", "t-1", "tx-1", "t1-", "end", "t1-end-2", "t9999999999-1", 5, None]
        )  # fmt: skip
        if good and rng.random() < 0.2:
            name = f"t{rng.randint(0, 9)}-end"
        frame = json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})
        return "mark" if good else "mark_bad", frame, 0 if good else 1, False
    if roll < 0.72:
        dtmf = rng.choice([{"digit": "5"}, {"digit": None}, None, "x", {"digit": "x" * 100}])
        return "dtmf", json.dumps({"event": "dtmf", "dtmf": dtmf}), 0, False
    if roll < 0.78:
        event = rng.choice(["start", "connected"])
        return f"repeated_{event}", json.dumps({"event": event, "start": {}}), 1, False
    if roll < 0.84:
        event = rng.choice(["", "Media", "clear", 5, None, ["media"]])
        return "unknown_event", json.dumps({"event": event}), 1, False
    if roll < 0.88:
        whole = _media(stream_sid, "AAAA")
        return "truncated_json", whole[: rng.randint(1, len(whole) - 1)], 1, False
    if roll < 0.91:
        return "not_an_object", rng.choice(["[]", "1", "null", '"media"']), 1, False
    if roll < 0.93:
        return "deep_nesting", "[" * rng.choice([1000, 100000]), 1, False
    if roll < 0.97:
        size = rng.choice([0, 1, 160, 65535, 65537])
        return "binary", rng.randbytes(size), 1, False
    return "stop", json.dumps({"event": "stop", "streamSid": stream_sid}), 0, True


async def _phone_sync(ws: aiohttp.ClientWebSocketResponse, stream_sid: str) -> None:
    """A WebSocket ping, read to its pong; what the server sends is for this stream."""
    await ws.ping(b"fz")
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.PONG:
                return
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise FuzzFailure(f"phone stream ended unasked: {msg.type.name}")
            event = json.loads(msg.data)
            if event.get("streamSid") != stream_sid:
                raise FuzzFailure(f"cross-talk: stream {stream_sid} got {msg.data[:200]}")


async def _stream_token(http: aiohttp.ClientSession, base_http: str, call_sid: str) -> str:
    from loadtest.phone_sim import stream_parameters

    form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": "+15550100"}
    async with http.post(f"{base_http}/twilio/voice", data=form) as resp:
        if resp.status != 200:
            raise FuzzFailure(f"/twilio/voice answered {resp.status}")
        return stream_parameters(await resp.text())["streamToken"]


async def phone_walk(
    http: aiohttp.ClientSession,
    base_http: str,
    rng: random.Random,
    steps: int,
    result: WsFuzzResult,
    ignored_of: Callable[[str], int | None] | None = None,
) -> None:
    call_sid = "CA" + uuid.UUID(int=rng.getrandbits(128)).hex
    stream_sid = "MZ" + uuid.UUID(int=rng.getrandbits(128)).hex
    token = await _stream_token(http, base_http, call_sid)
    url = base_http.replace("http://", "ws://") + "/twilio/stream"
    refuse = rng.random() < 0.15
    if refuse:  # someone else's token, a forged one, none, or one already used
        token = rng.choice(
            [await _stream_token(http, base_http, "CAother"), token[:-2] + "xx", "", None]
        )
    async with http.ws_connect(url, autoping=False, max_msg_size=0) as ws:
        await ws.send_str(json.dumps({"event": "connected", "protocol": "Call"}))
        start = {
            "event": "start",
            "streamSid": stream_sid,
            "start": {
                "callSid": call_sid,
                "streamSid": stream_sid,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"streamToken": token, "from": "+15550100"},
            },
        }
        await ws.send_str(json.dumps(start))
        if refuse:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.CLOSE or ws.close_code != 4401:
                raise FuzzFailure(f"a stream with a bad token was not closed 4401: {msg}")
            result.refused_streams += 1
            return
        await _phone_sync(ws, stream_sid)
        state: dict[str, Any] = {}
        for _ in range(steps):
            kind, frame, ignored, ends = phone_step(rng, stream_sid, state)
            result.steps += 1
            before = ignored_of(call_sid) if ignored_of else None
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
            if ends:
                break
            await _phone_sync(ws, stream_sid)
            after = ignored_of(call_sid) if ignored_of else None
            if before is not None and after is not None:
                if after - before != ignored:
                    raise FuzzFailure(f"{kind}: {after - before} ignored, expected {ignored}")
                result.ignored_checked += ignored
    # The token opened its stream once: never again.
    async with http.ws_connect(url, autoping=False) as again:
        start["start"]["customParameters"]["streamToken"] = token  # type: ignore[index]
        await again.send_str(json.dumps(start))
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await again.receive()
        if again.close_code != 4401:
            raise FuzzFailure(f"a used stream token opened a stream again: {again.close_code}")
        result.refused_streams += 1


# --- the campaign --------------------------------------------------------------------------
class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()[:300]}")


def fuzz_settings(tmp: Path) -> Any:
    from server.settings import Settings

    return Settings.from_env(
        {},
        database_path=str(tmp / "captures.db"),
        stt_providers=("simulated",),
        llm_providers=("simulated",),
        tts_providers=("simulated",),
        log_level="warning",
        twilio_validate_signature=False,
        # The walker is one client address sending as fast as it can: the limits that
        # would otherwise drop its messages (each documented, tested in tests/security)
        # are raised, so that every answer is the one its input alone calls for.
        ws_messages_per_second=100000.0,
        audio_max_speed=1000.0,
        audio_burst_seconds=600.0,
        max_sockets_per_learner=64,
        connections_per_second=10000.0,
        connections_burst=10000,
        # Its HTTP calls too (a readiness check after every walk, each call's webhook).
        http_per_minute_per_address=10_000_000,
        http_per_minute_per_learner=10_000_000,
        # Typed turns of one learner, and new learners of the one address.
        conversation_per_minute=100_000,
        new_learners_per_minute=100_000,
    )


async def campaign(
    tmp: Path, *, walks: int, steps: int, seed: int, warmup: int = 20, pairs: int = 2
) -> WsFuzzResult:
    """Walks against the real app on loopback, two at a time (browser and phone mixed);
    then the leak and crash checks. `walks` are measured after `warmup` walks."""
    import psutil
    from aiohttp import web

    from pipelines.registry import Providers
    from pipelines.stt.simulated import SimulatedSTT
    from pipelines.tts.simulated import SimulatedTTS
    from server.app import create_app
    from server.appkeys import ENGINE

    settings = fuzz_settings(tmp)
    providers = Providers(stt=SimulatedSTT(), llm=EchoLLM(), tts=SimulatedTTS())
    app = create_app(settings, providers=providers)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    result = WsFuzzResult(seed=seed)
    errors = _ErrorLog()
    logging.getLogger().addHandler(errors)
    # Warnings (every ignored phone message, every refused stream) are what the walks
    # provoke on purpose; kept by a test runner's log capture they would count as memory
    # the server kept. Errors still reach `errors`.
    logging.disable(logging.WARNING)
    loop = asyncio.get_running_loop()
    previous_handler = loop.get_exception_handler()

    def unhandled(_loop: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        errors.records.append(f"loop: {ctx.get('message')} {ctx.get('exception')!r}")

    loop.set_exception_handler(unhandled)
    lifecycle = app[ENGINE].lifecycle

    def ignored_of(call_sid: str) -> int | None:
        for transport in lifecycle.transports:
            if getattr(transport, "call_sid", None) == call_sid:
                return int(transport.ignored)
        return None

    rng = random.Random(seed)
    marked_before = MARKED["events"]
    proc = psutil.Process()
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession() as http:
            tokens: dict[int, str] = {}
            for i in range(pairs * 4):  # a small pool of session ids, one learner each
                async with http.post(f"{base}/api/learners") as resp:
                    tokens[i] = (await resp.json())["learner_token"]

            async def walker(lane: int, count: int, lane_rng: random.Random) -> None:
                for n in range(count):
                    index = lane + pairs * (n % 4)  # lanes never share a session id
                    try:
                        if lane_rng.random() < 0.3:
                            result.phone_walks += 1
                            await phone_walk(http, base, lane_rng, steps, result, ignored_of)
                        else:
                            result.browser_walks += 1
                            token = tokens[index] if lane_rng.random() < 0.8 else None
                            await browser_walk(http, base, index, token, lane_rng, steps, result)
                    except (FuzzFailure, TimeoutError, aiohttp.ClientError) as exc:
                        result.failures.append(f"lane {lane} walk {n}: {exc!r}"[:1000])
                    result.walks += 1
                    async with http.get(f"{base}/health/ready") as resp:
                        if resp.status != 200:
                            result.failures.append(f"server not ready after a walk: {resp.status}")

            async def round_of(count: int) -> None:
                lanes = [random.Random(rng.getrandbits(64)) for _ in range(pairs)]
                per_lane = max(1, count // pairs)
                await asyncio.gather(*(walker(i, per_lane, lanes[i]) for i in range(pairs)))

            await round_of(warmup)
            await _settle(app)
            result.warmup_walks, result.walks = result.walks, 0
            result.tasks_before = len(asyncio.all_tasks())
            result.fds_before = _open_fds()
            rss_before = proc.memory_info().rss
            tracemalloc.start()
            traced_before = tracemalloc.get_traced_memory()[0]
            await round_of(walks)
            await _settle(app)
            result.traced_growth_bytes = tracemalloc.get_traced_memory()[0] - traced_before
            tracemalloc.stop()
            result.tasks_after = len(asyncio.all_tasks())
            result.fds_after = _open_fds()
            result.rss_growth_bytes = proc.memory_info().rss - rss_before
    finally:
        result.seconds = round(time.monotonic() - started, 1)
        await runner.cleanup()
        loop.set_exception_handler(previous_handler)
        logging.disable(logging.NOTSET)
        logging.getLogger().removeHandler(errors)
    result.logged_errors = errors.records[:50]
    result.marked_events = MARKED["events"] - marked_before
    return result


async def _settle(app: Any) -> None:
    from server.appkeys import ENGINE

    lifecycle = app[ENGINE].lifecycle
    async with asyncio.timeout(20):
        while lifecycle.sessions or lifecycle.transports:  # noqa: ASYNC110 (app-owned sets)
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)  # capture writes of the last turns, close callbacks
    gc.collect()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--walks", type=int, default=400)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fuzz-ws-") as tmp:
        result = asyncio.run(
            campaign(Path(tmp), walks=args.walks, steps=args.steps, seed=args.seed)
        )
    text = json.dumps(result.to_dict(), indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0 if not result.failures and not result.logged_errors else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""`WS /ws/{session_id}`: protocol version 1 (docs/protocol.md) over aiohttp WebSockets.

Thin on purpose: parse and validate each message, call the Session, and serialise the
Session's events. Bad input gets an `error` message and the conversation goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from audio.resample import SUPPORTED_RATES
from pipelines.events import AudioFrame, Event
from pipelines.outbox import Outbox, OutboxOverflow
from pipelines.session import MODES, Session, SessionInputError
from server import ws_direct
from server.appkeys import ADMIN, ENGINE
from server.validation import MAX_AUDIO_FRAME_BYTES, MAX_TEXT_CHARS, valid_session_id
from server.ws_direct import DirectAudioResponse
from server.ws_liveness import CLOSE_NOT_READING, LivenessConfig, Traffic, watch

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
_CLOSING = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
#: How long a silent or stalled client is kept (tests shorten it).
LIVENESS = LivenessConfig()
CLOSE_INVALID_SESSION = 4400
CLOSE_UNAVAILABLE = 4503


def _error(code: str, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message})


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    engine = request.app[ENGINE]
    session_id = request.match_info["session_id"]
    # No aiohttp heartbeat (a callback per received frame): `ws_liveness.watch` instead.
    # autoping off: pings and pongs reach the receive loop and count as traffic.
    response = DirectAudioResponse if ws_direct.available() else web.WebSocketResponse
    ws = response(max_msg_size=1024 * 1024, compress=False, autoping=False)
    await ws.prepare(request)
    if not valid_session_id(session_id):
        await ws.close(code=CLOSE_INVALID_SESSION, message=b"invalid session id")
        return ws
    admin = request.app.get(ADMIN)
    maintenance = getattr(getattr(admin, "maintenance", None), "enabled", False)
    if maintenance or engine.full:
        reason = "maintenance" if maintenance else "server full"
        await ws.send_str(_error("unavailable", f"not accepting new sessions: {reason}"))
        await ws.close(code=CLOSE_UNAVAILABLE, message=reason.encode())
        return ws

    outbox = Outbox()
    session = engine.open_session(session_id, outbox)
    engine.sessions.add(session)
    engine.connections.add(ws)
    if admin is not None:
        admin.session_opened()
    try:
        async with session:
            loop = asyncio.get_running_loop()
            traffic = Traffic()
            sender = loop.create_task(_send_loop(ws, outbox, traffic))
            watchdog = loop.create_task(
                watch(ws, traffic, outbox, session_id, lambda: _abort(request), LIVENESS)
            )
            try:
                await ws.send_str(json.dumps(_ready(session)))
                await _receive_loop(ws, session, traffic)
            finally:
                for task in (sender, watchdog):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    finally:
        engine.sessions.discard(session)
        engine.connections.discard(ws)
        if admin is not None:
            admin.session_closed()
        if not ws.closed:
            await ws.close()
    return ws


def _ready(session: Session) -> dict[str, Any]:
    cfg = session.config
    return {
        "type": "ready",
        "session_id": session.id,
        "sample_rate": cfg.input_rate,
        "output_sample_rate": cfg.output_rate,
        "mode": cfg.mode,
        "tts": cfg.tts,
        "protocol": PROTOCOL_VERSION,
    }


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _send_loop(ws: web.WebSocketResponse, outbox: Outbox, traffic: Traffic) -> None:
    try:
        while True:
            event = await outbox.get()
            if type(event) is AudioFrame:
                await ws.send_bytes(event.pcm)
            else:
                await ws.send_str(_encode(event))
            traffic.tx += 1
    except OutboxOverflow:
        log.warning("client stopped reading; closing")
        await ws.close(code=CLOSE_NOT_READING, message=b"client not reading")
    except ConnectionResetError:
        pass


def _encode(event: Event) -> str:
    return json.dumps(event.to_dict())


async def _receive_loop(ws: web.WebSocketResponse, session: Session, traffic: Traffic) -> None:
    """Hot path: one iteration per 20 ms audio frame of every session. Plain `receive()`
    (no `async for` wrapper), locals for everything looked up per frame, no allocation of
    our own before `feed_audio`."""
    receive = ws.receive
    feed_audio = session.feed_audio
    binary = WSMsgType.BINARY
    direct = getattr(ws, "direct", None)  # see server/ws_direct.py
    if direct is not None:
        # The parser calls the sink outside this task: run it in this task's context so
        # that what the session logs and spawns keeps the request and session ids.
        run_in_context = contextvars.copy_context().run

        def sink(data: bytes) -> bool:
            n = len(data)
            if n > MAX_AUDIO_FRAME_BYTES or n & 1:
                return False  # the loop below answers with an error
            traffic.rx += 1
            run_in_context(feed_audio, data)
            return True

        direct.sink = sink
    while True:
        if direct is not None:
            direct.parked = True
            msg = await receive()
            direct.parked = False
        else:
            msg = await receive()
        traffic.rx += 1
        kind = msg.type
        if kind is binary:
            data: bytes = msg.data
            n = len(data)
            if n > MAX_AUDIO_FRAME_BYTES:
                await ws.send_str(_error("audio_too_large", "audio frames are at most 64 KiB"))
            elif n & 1:
                await ws.send_str(_error("invalid_audio", "PCM16 frames have an even length"))
            else:
                feed_audio(data)
        elif kind is WSMsgType.PING:
            await ws.pong(msg.data)
        elif kind is WSMsgType.PONG:
            pass
        elif kind is WSMsgType.TEXT:
            try:
                done = await _handle_text(ws, session, msg.data)
            except SessionInputError as exc:
                await ws.send_str(_error(exc.code, str(exc)))
                continue
            if done:
                await ws.close(code=WSCloseCode.OK, message=b"end")
                return
        elif kind is WSMsgType.ERROR:
            log.info("websocket error: %s", ws.exception())
            return
        elif kind in _CLOSING:
            return


async def _handle_text(ws: web.WebSocketResponse, session: Session, raw: str) -> bool:
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        raise SessionInputError("invalid_json", "text frames must be JSON objects") from None
    if not isinstance(message, dict):
        raise SessionInputError("invalid_json", "text frames must be JSON objects")
    kind = message.get("type")
    if kind == "ping":
        await ws.send_str('{"type":"pong"}')
    elif kind == "start":
        session.configure(_start_config(session, message))
        await ws.send_str(json.dumps(_ready(session)))
    elif kind == "talk_start":
        session.talk_start()
    elif kind == "talk_end":
        session.talk_end()
    elif kind == "text":
        text = message.get("text")
        if not isinstance(text, str):
            raise SessionInputError("invalid_message", "text must be a string")
        if len(text) > MAX_TEXT_CHARS:
            raise SessionInputError("text_too_long", f"text is limited to {MAX_TEXT_CHARS} chars")
        session.submit_text(text)
    elif kind == "interrupt":
        session.interrupt()
    elif kind == "end":
        summary = await session.end()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await session.outbox.wait_empty()
        await ws.send_str(json.dumps({"type": "summary", "text": summary}))
        return True
    else:
        raise SessionInputError("unknown_type", f"unknown message type {kind!r}")
    return False


def _start_config(session: Session, message: dict[str, Any]) -> Any:
    def rate(name: str, default: int) -> int:
        value = message.get(name, default)
        if type(value) is not int or value not in SUPPORTED_RATES:
            raise SessionInputError(
                "invalid_message", f"{name} must be one of {', '.join(map(str, SUPPORTED_RATES))}"
            )
        return value

    sample_rate = rate("sample_rate", 16000)
    output_rate = rate("output_sample_rate", sample_rate)
    mode = message.get("mode", "continuous")
    if mode not in MODES:
        raise SessionInputError("invalid_message", f"mode must be one of {', '.join(MODES)}")
    tts = message.get("tts", True)
    if not isinstance(tts, bool):
        raise SessionInputError("invalid_message", "tts must be true or false")
    from dataclasses import replace

    return replace(
        session.config, mode=mode, input_rate=sample_rate, output_rate=output_rate, tts=tts
    )

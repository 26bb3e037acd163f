"""`WS /ws/{session_id}`: protocol version 1 (docs/protocol.md) over aiohttp WebSockets.

Thin on purpose: parse and validate each message, call the Session, and serialise the
Session's events. Bad input gets an `error` message and the conversation goes on.
Admission, liveness and the send loop are the lifecycle's (server/lifecycle.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from dataclasses import replace
from typing import Any

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from admin.apidoc import describe, error
from audio.resample import SUPPORTED_RATES
from pipelines.events import AudioFrame, Event
from pipelines.session import MODES, Session, SessionConfig, SessionInputError
from server.appkeys import ENGINE, LIMITS, SETTINGS
from server.http_errors import ApiError
from server.limits.messages import MessageBudget, Verdict
from server.limits.origin import origin_allowed
from server.liveness import CLOSE_NOT_READING, LivenessConfig
from server.transports import direct
from server.transports.base import (
    CLOSE_INVALID_SESSION,
    CLOSE_UNAVAILABLE,
    Admission,
    Opening,
    Refusal,
)
from server.transports.control import goodbye, typed_turn
from server.transports.websocket import WebSocketPeer
from server.validation import MAX_AUDIO_FRAME_BYTES, valid_session_id

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
#: Protocol 1.1 = 1 plus `duck`, `pause` and `resume` (a version 1 client ignores them).
PROTOCOL_REVISION = 1
#: Until its `start` says `revision: 1`, a client is taken for a protocol 1 client, whose
#: player ignores `duck`, `pause` and `resume`.
V1_LISTENER: dict[str, Any] = {"listener_yields": False}
_CLOSING = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
#: How long a silent or stalled browser is kept (tests shorten it).
LIVENESS = LivenessConfig()
#: A connection without `?token=` that says nothing at all for this long is closed (4408).
FIRST_MESSAGE_TIMEOUT_S = 60.0
#: After a frame whose audio was (partly) dropped for arriving too fast, the connection is
#: not read for this long: a flooding client is read at most 20 frames a second, so the
#: audio the session drops costs the server almost nothing to receive (TCP holds the rest
#: back). A real-time client never has audio dropped (docs/security.md).
AUDIO_DROP_PAUSE_S = 0.05


def _error(code: str, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message})


@describe(
    "The voice protocol v1 (WebSocket), docs/protocol.md",
    auth="learner_or_new",
    tags=("voice",),
    websocket=True,
    path={"session_id": {"type": "string"}},
    query={"token": {"type": "string"}},
    responses={
        400: error("Not a WebSocket upgrade", "bad_request"),
        403: error("A page of another origin", "origin_not_allowed"),
    },
)
async def ws_handler(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    origin = request.headers.get("Origin")
    if not origin_allowed(origin, request.host, settings.allowed_origins, settings.public_url):
        log.warning("WebSocket refused: origin not allowed")
        raise ApiError(
            403,
            "origin_not_allowed",
            "this page's origin may not open a voice connection (see ALLOWED_ORIGINS)",
        )
    # autoping off: pings and pongs reach the receive loop and count as traffic.
    response = direct.DirectAudioResponse if direct.available() else web.WebSocketResponse
    ws = response(max_msg_size=1024 * 1024, compress=False, autoping=False)
    await ws.prepare(request)
    transport = BrowserTransport(request, ws, request.match_info["session_id"])
    await request.app[ENGINE].lifecycle.serve(transport)
    return ws


class BrowserTransport(WebSocketPeer):
    kind = "browser"

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, session_id: str) -> None:
        super().__init__(request, ws, LIVENESS)
        self.session_id = session_id
        #: Sent `ready` during the handshake already (a connection without `?token=`).
        self._greeted = False
        #: The message that settled who is asking: acted on first, once the session lives.
        self._first: WSMessage | None = None
        #: A learner token issued for this connection, handed over in the next `ready`.
        self._issued: str | None = None
        #: Control messages per second (WS_MESSAGES_PER_SECOND); the excess is dropped.
        self.budget = MessageBudget(request.app[SETTINGS].ws_messages_per_second, time.monotonic())
        self.limits = request.app[LIMITS]
        self.on_limited = self.limits.on_limited
        self.learner_id = ""

    async def accept(self) -> Opening | None:
        """The learner's credential: `?token=`, or else the first message (a `start` may
        carry `token`; anything else asks for a new anonymous learner). No session exists
        until the credential is settled, so nothing a peer sends is acted on before."""
        if not valid_session_id(self.session_id):
            await self.close(CLOSE_INVALID_SESSION, "invalid session id")
            return None
        token = self.request.query.get("token")
        if token is not None:
            return Opening(self.session_id, V1_LISTENER, credential=token)
        # Clients wait for `ready` before they send `start`: greet with the defaults.
        await self.ws.send_str(json.dumps(_ready_fields(self.session_id, SessionConfig())))
        self._greeted = True
        try:
            async with asyncio.timeout(FIRST_MESSAGE_TIMEOUT_S):
                self._first = await self._first_message()
        except TimeoutError:
            await self.close(CLOSE_NOT_READING, "no first message")
            return None
        if self._first is None:
            return None
        return Opening(self.session_id, V1_LISTENER, credential=_start_token(self._first))

    async def _first_message(self) -> WSMessage | None:
        """The first message that says something (pings, either kind, do not)."""
        while True:
            msg = await self.ws.receive()
            self.traffic.rx += 1
            if msg.type in _CLOSING or msg.type is WSMsgType.ERROR:
                return None
            if msg.type is WSMsgType.PING:
                await self.ws.pong(msg.data)
            elif msg.type is WSMsgType.PONG:
                continue
            elif msg.type is WSMsgType.TEXT and _type_of(msg) == "ping":
                await self.ws.send_str('{"type":"pong"}')
            else:
                return msg

    async def refuse(self, refusal: Refusal) -> None:
        message = refusal.reason
        if refusal.code == CLOSE_UNAVAILABLE:
            message = f"not accepting new sessions: {refusal.reason}"
        await self.ws.send_str(_error(refusal.error, message))
        await self.close(refusal.code, refusal.reason)

    async def opened(self, session: Session, admission: Admission) -> None:
        self._issued = admission.issued_token
        self.learner_id = admission.learner_id
        if not self._greeted:
            await self.ws.send_str(json.dumps(self.ready(session)))
        elif self._issued and not self._ready_follows(session):
            # The answer to this first message is not a `ready` (it is not a `start`, or a
            # `start` that is refused): hand the credential over now.
            credential = {"type": "credential", "learner_token": self._issued}
            self._issued = None
            await self.ws.send_str(json.dumps(credential))

    def _ready_follows(self, session: Session) -> bool:
        """Whether the first message is a `start` that will be answered with `ready`."""
        if _type_of(self._first) != "start":
            return False
        assert self._first is not None
        try:
            _start_config(session, json.loads(self._first.data))
        except SessionInputError:
            return False
        return True

    def ready(self, session: Session) -> dict[str, Any]:
        message = _ready(session)
        if self._issued:
            message["learner_token"], self._issued = self._issued, None
        return message

    async def send(self, event: Event) -> None:
        if type(event) is AudioFrame:
            await self.ws.send_bytes(event.pcm)
        else:
            await self.ws.send_str(json.dumps(event.to_dict()))

    async def receive(self, session: Session) -> None:
        first, self._first = self._first, None
        await _receive_loop(self, session, first)


_TOO_MANY = _error(
    "rate_limited", "too many control messages; the excess was dropped (WS_MESSAGES_PER_SECOND)"
)
ALLOW, DROP_AND_TELL = Verdict.ALLOW, Verdict.DROP_AND_TELL


def _type_of(msg: WSMessage | None) -> object:
    """The `type` of a JSON text message (None for anything else)."""
    if msg is None or msg.type is not WSMsgType.TEXT:
        return None
    try:
        message = json.loads(msg.data)
    except (ValueError, RecursionError):
        return None
    return message.get("type") if isinstance(message, dict) else None


def _start_token(msg: WSMessage) -> str | None:
    """The `token` of a `start` message (anything unusable is a bad credential: "")."""
    if _type_of(msg) != "start":
        return None
    message = json.loads(msg.data)
    if "token" not in message:
        return None
    token = message["token"]
    return token if isinstance(token, str) else ""


def _ready(session: Session) -> dict[str, Any]:
    return _ready_fields(session.id, session.config)


def _ready_fields(session_id: str, cfg: SessionConfig) -> dict[str, Any]:
    return {
        "type": "ready",
        "session_id": session_id,
        "sample_rate": cfg.input_rate,
        "output_sample_rate": cfg.output_rate,
        "mode": cfg.mode,
        "tts": cfg.tts,
        "protocol": PROTOCOL_VERSION,
        "revision": PROTOCOL_REVISION,
    }


async def _receive_loop(
    transport: BrowserTransport, session: Session, first: WSMessage | None
) -> None:
    """Hot path: one iteration per 20 ms audio frame of every session. Plain `receive()`
    (no `async for` wrapper), locals for everything looked up per frame, no allocation of
    our own before `feed_audio`. `first`: a message already received, handled first."""
    ws = transport.ws
    traffic = transport.traffic
    receive = ws.receive
    feed_audio = session.feed_audio
    binary = WSMsgType.BINARY
    shortcut = ws.direct if isinstance(ws, direct.DirectAudioResponse) else None
    if shortcut is not None:
        # The parser calls the sink outside this task: run it in this task's context so
        # that what the session logs and spawns keeps the request and session ids.
        run_in_context = contextvars.copy_context().run

        def sink(data: bytes) -> bool:
            n = len(data)
            if n > MAX_AUDIO_FRAME_BYTES or n & 1 or session.dropping_audio:
                return False  # the loop below answers with an error, or pauses
            traffic.rx += 1
            run_in_context(feed_audio, data)
            return True

        shortcut.sink = sink
    monotonic = time.monotonic
    pending = first
    while True:
        if pending is not None:
            msg, pending = pending, None
        elif shortcut is not None:
            shortcut.parked = True
            msg = await receive()
            shortcut.parked = False
            traffic.rx += 1
        else:
            msg = await receive()
            traffic.rx += 1
        kind = msg.type
        if kind is binary:
            data: bytes = msg.data
            n = len(data)
            if n <= MAX_AUDIO_FRAME_BYTES and not n & 1:
                feed_audio(data)
                if session.dropping_audio:
                    await asyncio.sleep(AUDIO_DROP_PAUSE_S)
            elif transport.budget.take(monotonic()) is ALLOW:  # errors never answer a flood
                if n > MAX_AUDIO_FRAME_BYTES:
                    await ws.send_str(_error("audio_too_large", "audio frames are at most 64 KiB"))
                else:
                    await ws.send_str(_error("invalid_audio", "PCM16 frames have an even length"))
        elif kind is WSMsgType.PING:
            await ws.pong(msg.data)
        elif kind is WSMsgType.PONG:
            pass
        elif kind is WSMsgType.TEXT:
            verdict = transport.budget.take(monotonic())
            if verdict is not ALLOW:
                if verdict is DROP_AND_TELL:
                    transport.on_limited("ws_messages")
                    await ws.send_str(_TOO_MANY)
                continue
            try:
                done = await _handle_text(transport, session, msg.data)
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


async def _handle_text(transport: BrowserTransport, session: Session, raw: str) -> bool:
    ws = transport.ws
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
        await ws.send_str(json.dumps(transport.ready(session)))
    elif kind == "talk_start":
        session.talk_start()
    elif kind == "talk_end":
        session.talk_end()
    elif kind == "text":
        await typed_turn(session, message, transport.limits, transport.learner_id)
    elif kind == "interrupt":
        session.interrupt()
    elif kind == "end":
        await ws.send_str(json.dumps(await goodbye(session)))
        return True
    else:
        raise SessionInputError("unknown_type", f"unknown message type {kind!r}")
    return False


def _start_config(session: Session, message: dict[str, Any]) -> SessionConfig:
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
    revision = message.get("revision", 0)
    if type(revision) is not int or revision < 0:
        raise SessionInputError("invalid_message", "revision must be a whole number")
    return replace(
        session.config,
        mode=mode,
        input_rate=sample_rate,
        output_rate=output_rate,
        tts=tts,
        listener_yields=revision >= PROTOCOL_REVISION,
    )

"""`WS /twilio/stream`: Twilio Media Streams (bidirectional) in front of a Session.

Twilio sends JSON text frames: `connected`, `start` (streamSid, callSid, customParameters),
`media` (base64 G.711 mu-law, 8 kHz, 20 ms), `mark` (a mark we sent has been played),
`dtmf` and `stop`. We send `media` (the agent's voice, 20 ms mu-law payloads), a `mark`
after every chunk (named `t<turn>-<ms>`: the echo tells the Session how much of the reply
the caller has heard; `t<turn>-end` after a reply's last chunk) and `clear` on barge-in,
so the caller stops hearing the agent at once. While the caller may be barging in, the
reply is ducked, paused and resumed with `clear` and the unheard audio sent again
(server/transports/phone_playback.py); each `clear` adds a generation to the mark names
(`t<turn>-<ms>.<generation>`).

The session id derives from the CallSid, so the call's captures and context are found under
`call-<CallSid>`. Anything malformed is logged and ignored: a phone call never dies of it.

A `start` opens a session only with the call's stream token (`customParameters.streamToken`,
issued by `POST /twilio/voice`, server/transports/twilio_tokens.py): valid, unexpired, for
that `callSid`, and never used before. Any other `start` is logged with the reason and the
stream closed with 4401, before a session exists.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
import time
import uuid
from typing import Any

from aiohttp import WSMessage, WSMsgType, web

from audio.mulaw import mulaw_decode, mulaw_encode
from pipelines.events import AudioEnd, AudioFrame, Duck, Event, Interrupted, Pause, Resume
from pipelines.session import Session
from server.appkeys import ENGINE, STREAM_GATE
from server.liveness import LivenessConfig
from server.transports.base import CLOSE_UNAUTHORIZED, Admission, Opening, Refusal
from server.transports.phone_playback import Clear, Media, Out, PhonePlayback
from server.transports.twilio_tokens import TOKEN_PARAM, StreamGate, TokenRefused
from server.transports.websocket import WebSocketPeer

log = logging.getLogger(__name__)

RATE = 8000
PAYLOAD_BYTES = 160  # 20 ms of mu-law at 8 kHz
#: A Twilio media payload is 20 ms (160 bytes); more than a second of audio is not Twilio.
MAX_PAYLOAD_BYTES = 8000
_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_MARK = re.compile(r"^t(\d{1,9})-(\d{1,9}|end)(?:\.(\d{1,9}))?$")
_CLOSING = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_WITHHELD = frozenset({"+266696687", "+7378742833", "+2562533", "+8656696", "+86282452253"})
#: Twilio streams 20 ms of audio without pause for the whole call, so ten quiet seconds
#: are worth a ping, and thirty without even a pong mean the stream is gone.
LIVENESS = LivenessConfig(idle_ping_s=10.0, idle_close_s=30.0)
#: Twilio sends `connected` and `start` as soon as the stream opens: a stream without a
#: `start` this long after is not a call (and holds its address's place meanwhile).
START_TIMEOUT_S = 10.0
#: Every call is continuous, 8 kHz both ways; its echo is guarded; marks report playback.
PHONE_CONFIG: dict[str, Any] = {
    "mode": "continuous",
    "input_rate": RATE,
    "output_rate": RATE,
    "echo_guard": True,
    "playback_acks": True,
}


def caller_number(raw: object) -> str | None:
    """The caller's number if it names one person: E.164, and not one of the placeholders
    carriers show for a withheld number (ANONYMOUS, RESTRICTED, BLOCKED, UNKNOWN,
    UNAVAILABLE spelled on a keypad) nor a SIP or client address. Anything else is no
    caller: the call gets an anonymous learner of its own, never a shared one."""
    if not isinstance(raw, str):
        return None
    number = raw.strip()
    if not _E164.fullmatch(number) or number in _WITHHELD:
        return None
    return number


def session_id_for(call_sid: str) -> str:
    """`call-<CallSid>` in the session-id charset ([A-Za-z0-9_-]{1,64})."""
    cleaned = _ID_CHARS.sub("_", call_sid)[:58]
    return f"call-{cleaned or uuid.uuid4().hex}"


async def stream_handler(
    request: web.Request, *, address_limited: bool = True
) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=256 * 1024, compress=False, autoping=False)
    await ws.prepare(request)
    call = TwilioCall(request, ws, request.app[STREAM_GATE], address_limited=address_limited)
    await request.app[ENGINE].lifecycle.serve(call)
    return ws


class TwilioCall(WebSocketPeer):
    """One Media Streams connection: waits for `start`, then feeds a Session until `stop`."""

    kind = "phone"

    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        gate: StreamGate,
        *,
        address_limited: bool = True,
    ) -> None:
        super().__init__(request, ws, LIVENESS)
        self.gate = gate
        #: Whether the per-address connection rate applies to this stream. False once the
        #: upgrade's X-Twilio-Signature is verified: Twilio opens every call's stream from
        #: its own few addresses. Either way the stream holds a place of its address until
        #: its `start` brings a valid one-use token (`Opening.per_call`): a replayed
        #: signature alone cannot pile up sockets.
        self.address_limited = address_limited
        self.stream_sid = ""
        self.call_sid = ""
        self.session: Session | None = None
        self.ignored = 0
        self._playback = PhonePlayback()
        self._cleared: set[int] = set()

    async def accept(self) -> Opening | None:
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                start = await self._wait_for_start()
        except TimeoutError:
            log.warning("twilio stream refused: no start within %.0f s", START_TIMEOUT_S)
            await self.close(CLOSE_UNAUTHORIZED, "no start")
            return None
        if start is None:
            return None
        self.call_sid = str(start.get("callSid") or "")
        params = start.get("customParameters")
        params = params if isinstance(params, dict) else {}
        try:
            await self.gate.admit(params.get(TOKEN_PARAM), self.call_sid)
        except TokenRefused as refused:
            log.warning(
                "twilio stream refused: %s", refused.reason,
                extra={"reason": refused.code, "call_sid": self.call_sid[:64],
                       "stream_sid": self.stream_sid[:64]},
            )  # fmt: skip
            await self.close(CLOSE_UNAUTHORIZED, refused.code)
            return None
        return Opening(
            session_id_for(self.call_sid or self.stream_sid),
            PHONE_CONFIG,
            # The learner is the caller's number, hashed (never stored or logged as is).
            caller=caller_number(params.get("from")),
            per_call=True,  # its one-use token is checked: limited per call from here on
        )

    async def refuse(self, refusal: Refusal) -> None:
        await self.close(refusal.code, "unavailable")

    async def opened(self, session: Session, admission: Admission) -> None:
        self.session = session
        log.info(
            "phone call started",
            extra={"session_id": session.id, "call_sid": self.call_sid,
                   "stream_sid": self.stream_sid},
        )  # fmt: skip

    async def receive(self, session: Session) -> None:
        try:
            await self._receive_loop(session)
        finally:
            extra = {"session_id": session.id, "ignored_messages": self.ignored}
            log.info("phone call ended", extra=extra)

    # ----------------------------------------------------------------------- input
    async def _wait_for_start(self) -> dict[str, Any] | None:
        while (message := await self._next()) is not None:
            event = message.get("event")
            if event == "start":
                start = message.get("start")
                if not isinstance(start, dict):
                    self._ignore("start without a start object")
                    continue
                fmt = start.get("mediaFormat") or {}
                if isinstance(fmt, dict) and fmt.get("encoding", "audio/x-mulaw") not in (
                    "audio/x-mulaw",
                ):
                    self._ignore(f"unsupported media format {fmt!r}")
                    continue
                self.stream_sid = str(message.get("streamSid") or start.get("streamSid") or "")
                params = start.get("customParameters")
                if params is not None and not isinstance(params, dict):
                    self._ignore("customParameters is not an object")
                return start
            if event == "stop":
                return None
            if event != "connected":
                self._ignore(f"{event!r} before start")
        return None

    async def _receive_loop(self, session: Session) -> None:
        while (message := await self._next()) is not None:
            event = message.get("event")
            if event == "media":
                pcm = self._media_pcm(message)
                if pcm:
                    session.feed_audio(pcm)
            elif event == "mark":
                self._mark(session, message)
            elif event == "dtmf":
                dtmf = message.get("dtmf")
                digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
                log.info("dtmf", extra={"session_id": session.id, "digit": str(digit)[:4]})
            elif event == "stop":
                await self._hang_up(session)
                return
            elif event in ("connected", "start"):
                self._ignore(f"repeated {event}")
            else:
                self._ignore(f"unknown event {event!r}")

    async def _next(self) -> dict[str, Any] | None:
        """The next JSON object Twilio sent (None once the connection is closing). Pings are
        answered here, and every message counts as traffic for the liveness watchdog."""
        ws = self.ws
        while True:
            msg = await ws.receive()
            self.traffic.rx += 1
            if msg.type in _CLOSING:
                return None
            if msg.type is WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type is WSMsgType.ERROR:
                log.info("twilio websocket error: %s", ws.exception())
                return None
            elif (message := self._parse(msg)) is not None:
                return message

    def _parse(self, msg: WSMessage) -> dict[str, Any] | None:
        if msg.type is WSMsgType.TEXT:
            try:
                message = json.loads(msg.data)
            except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
                self._ignore("invalid JSON")
                return None
            if isinstance(message, dict):
                return message
            self._ignore("not a JSON object")
        elif msg.type is WSMsgType.BINARY:
            self._ignore("binary frame")
        return None

    def _media_pcm(self, message: dict[str, Any]) -> bytes | None:
        media = message.get("media")
        if not isinstance(media, dict):
            self._ignore("media without a media object")
            return None
        if media.get("track", "inbound") not in ("inbound", "inbound_track"):
            return None
        payload = media.get("payload")
        if not isinstance(payload, str) or len(payload) > MAX_PAYLOAD_BYTES * 4 // 3 + 4:
            self._ignore("media payload missing or too large")
            return None
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            self._ignore("media payload is not base64")
            return None
        if len(raw) > MAX_PAYLOAD_BYTES:  # the length check above admits up to 2 bytes more
            self._ignore("media payload too large")
            return None
        return mulaw_decode(raw) if raw else None

    def _mark(self, session: Session, message: dict[str, Any]) -> None:
        mark = message.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        found = _MARK.match(name) if isinstance(name, str) else None
        if found is None:
            self._ignore("mark with an unknown name")
            return
        turn_id, position = int(found.group(1)), found.group(2)
        played = self._playback.acked(turn_id, position, int(found.group(3) or 0))
        if played and position != "end":
            session.playback_acked(turn_id, int(position) / 1000)

    async def _hang_up(self, session: Session) -> None:
        """The caller hung up: remember what they heard of an unfinished reply."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await session.end()

    def _ignore(self, why: str) -> None:
        self.ignored += 1
        if self.ignored <= 20 or self.ignored % 1000 == 0:
            log.warning("ignored twilio message: %s", why, extra={"count": self.ignored})

    # ---------------------------------------------------------------------- output
    async def send(self, event: Event) -> None:
        playback = self._playback
        kind = type(event)
        if kind is AudioFrame:
            assert isinstance(event, AudioFrame)
            if event.turn_id not in self._cleared:
                await self._put(playback.audio(event.turn_id, event.pcm))
        elif kind is AudioEnd:
            assert isinstance(event, AudioEnd)
            if event.turn_id not in self._cleared:
                # The reply is complete: its echo tells the caller side it finished playing.
                await self._put(playback.end(event.turn_id))
        elif kind is Interrupted:
            assert isinstance(event, Interrupted)
            self._cleared.add(event.turn_id)
            playback.interrupted(event.turn_id)
            await self._send({"event": "clear", "streamSid": self.stream_sid})
            self._log_clear(event.turn_id)
        elif kind is Duck:
            assert isinstance(event, Duck)
            await self._put(playback.duck(event.turn_id, event.gain_db))
        elif kind is Pause:
            assert isinstance(event, Pause)
            await self._put(playback.pause(event.turn_id))
        elif kind is Resume:
            assert isinstance(event, Resume)
            await self._put(playback.resume(event.turn_id))

    async def _put(self, outs: list[Out]) -> None:
        for out in outs:
            if isinstance(out, Media):
                await self._send_media(out.pcm)
                await self._send_mark(out.mark)
            elif isinstance(out, Clear):
                await self._send({"event": "clear", "streamSid": self.stream_sid})
            else:
                await self._send_mark(out.mark)

    async def _send_media(self, pcm: bytes) -> None:
        ulaw = mulaw_encode(pcm)
        for off in range(0, len(ulaw), PAYLOAD_BYTES):
            payload = base64.b64encode(ulaw[off : off + PAYLOAD_BYTES]).decode()
            await self._send(
                {"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}}
            )

    async def _send_mark(self, name: str) -> None:
        await self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def _send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message, separators=(",", ":")))

    def _log_clear(self, turn_id: int) -> None:
        session = self.session
        detected = session.last_barge_in if session is not None else 0.0
        latency_ms = (time.monotonic() - detected) * 1000 if detected else -1.0
        log.info(
            "twilio clear sent",
            extra={
                "session_id": session.id if session else "",
                "turn_id": turn_id,
                "clear_latency_ms": round(latency_ms, 2),
            },
        )

"""`WS /twilio/stream`: Twilio Media Streams (bidirectional) in front of a Session.

Twilio sends JSON text frames: `connected`, `start` (streamSid, callSid, customParameters),
`media` (base64 G.711 mu-law, 8 kHz, 20 ms), `mark` (a mark we sent has been played),
`dtmf` and `stop`. We send `media` (the agent's voice, 20 ms mu-law payloads), a `mark`
after every chunk (named `t<turn>-<ms>`: the echo tells the Session how much of the reply
the caller has heard; `t<turn>-end` after a reply's last chunk) and `clear` on barge-in,
so the caller stops hearing the agent at once.

The session id derives from the CallSid, so the call's captures and context are found under
`call-<CallSid>`. Anything malformed is logged and ignored: a phone call never dies of it.
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

from aiohttp import WSMsgType, web

from audio.mulaw import mulaw_decode, mulaw_encode
from pipelines.events import AudioEnd, AudioFrame, Interrupted
from pipelines.outbox import Outbox, OutboxOverflow
from pipelines.session import Session
from server.appkeys import ADMIN, ENGINE

log = logging.getLogger(__name__)

RATE = 8000
PAYLOAD_BYTES = 160  # 20 ms of mu-law at 8 kHz
#: A Twilio media payload is 20 ms (160 bytes); more than a second of audio is not Twilio.
MAX_PAYLOAD_BYTES = 8000
_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_MARK = re.compile(r"^t(\d{1,9})-(\d{1,9}|end)$")
CLOSE_UNAVAILABLE = 4503


def session_id_for(call_sid: str) -> str:
    """`call-<CallSid>` in the session-id charset ([A-Za-z0-9_-]{1,64})."""
    cleaned = _ID_CHARS.sub("_", call_sid)[:58]
    return f"call-{cleaned or uuid.uuid4().hex}"


async def stream_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=256 * 1024, compress=False)
    await ws.prepare(request)
    call = TwilioCall(request.app, ws)
    try:
        await call.run()
    finally:
        if not ws.closed:
            await ws.close()
    return ws


class TwilioCall:
    """One Media Streams connection: waits for `start`, then runs a Session until `stop`."""

    def __init__(self, app: web.Application, ws: web.WebSocketResponse) -> None:
        self.app = app
        self.ws = ws
        self.stream_sid = ""
        self.session: Session | None = None
        self.ignored = 0

    async def run(self) -> None:
        start = await self._wait_for_start()
        if start is None:
            return
        engine = self.app[ENGINE]
        admin = self.app.get(ADMIN)
        maintenance = getattr(getattr(admin, "maintenance", None), "enabled", False)
        if maintenance or engine.full:
            log.warning("phone call refused: %s", "maintenance" if maintenance else "full")
            await self.ws.close(code=CLOSE_UNAVAILABLE, message=b"unavailable")
            return
        call_sid = str(start.get("callSid") or "")
        session_id = session_id_for(call_sid or self.stream_sid)
        config = engine.session_config(
            mode="continuous",
            input_rate=RATE,
            output_rate=RATE,
            echo_guard=True,
            playback_acks=True,
        )
        outbox = Outbox()
        session = engine.open_session(session_id, outbox, config)
        self.session = session
        engine.sessions.add(session)
        engine.connections.add(self.ws)
        if admin is not None:
            admin.session_opened()
        log.info(
            "phone call started",
            extra={"session_id": session_id, "call_sid": call_sid, "stream_sid": self.stream_sid},
        )
        try:
            async with session:
                sender = asyncio.get_running_loop().create_task(self._send_loop(outbox))
                try:
                    await self._receive_loop(session)
                finally:
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sender
        finally:
            engine.sessions.discard(session)
            engine.connections.discard(self.ws)
            if admin is not None:
                admin.session_closed()
            log.info(
                "phone call ended",
                extra={"session_id": session_id, "ignored_messages": self.ignored},
            )

    # ----------------------------------------------------------------------- input
    async def _wait_for_start(self) -> dict[str, Any] | None:
        async for msg in self.ws:
            message = self._parse(msg)
            if message is None:
                continue
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
        async for msg in self.ws:
            message = self._parse(msg)
            if message is None:
                continue
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

    def _parse(self, msg: Any) -> dict[str, Any] | None:
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
        elif msg.type is WSMsgType.ERROR:
            log.info("twilio websocket error: %s", self.ws.exception())
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
        return mulaw_decode(raw) if raw else None

    def _mark(self, session: Session, message: dict[str, Any]) -> None:
        mark = message.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        found = _MARK.match(name) if isinstance(name, str) else None
        if found is None:
            self._ignore("mark with an unknown name")
            return
        if found.group(2) != "end":
            session.playback_acked(int(found.group(1)), int(found.group(2)) / 1000)

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
    async def _send_loop(self, outbox: Outbox) -> None:
        sent_ms: dict[int, float] = {}
        cleared: set[int] = set()
        try:
            while True:
                event = await outbox.get()
                if isinstance(event, AudioFrame):
                    if event.turn_id in cleared:
                        continue
                    await self._send_audio(event, sent_ms)
                elif isinstance(event, AudioEnd) and event.turn_id not in cleared:
                    # The reply is complete: its echo tells the caller side it finished playing.
                    await self._send_mark(f"t{event.turn_id}-end")
                elif isinstance(event, Interrupted):
                    cleared.add(event.turn_id)
                    await self._send({"event": "clear", "streamSid": self.stream_sid})
                    self._log_clear(event.turn_id)
        except OutboxOverflow:
            log.warning("twilio stream stopped reading; closing")
            await self.ws.close()
        except ConnectionResetError:
            pass

    async def _send_audio(self, frame: AudioFrame, sent_ms: dict[int, float]) -> None:
        ulaw = mulaw_encode(frame.pcm)
        for off in range(0, len(ulaw), PAYLOAD_BYTES):
            payload = base64.b64encode(ulaw[off : off + PAYLOAD_BYTES]).decode()
            await self._send(
                {"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}}
            )
        total = sent_ms.get(frame.turn_id, 0.0) + len(ulaw) * 1000 / RATE
        sent_ms[frame.turn_id] = total
        await self._send_mark(f"t{frame.turn_id}-{round(total)}")

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

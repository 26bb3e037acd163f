"""One simulated caller: a WebSocket connection that speaks the script in real time.

An `asyncio.Protocol`, not a task per caller: the pacer calls `send_frame` for every
caller on a shared 20 ms schedule, and incoming frames are handled in `data_received`,
so hundreds of callers cost one timer and a few callbacks each per frame.
"""

from __future__ import annotations

import asyncio
import json
import time

from loadtest.accounting import PLAYER_START_LEAD_S, CallerTally, PlayerModel, Turn
from loadtest.script import Script
from loadtest.wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    ProtocolError,
    check_handshake,
    close_frame,
    handshake_request,
    masked_frame,
)

clock = time.monotonic


class Caller(asyncio.Protocol):
    def __init__(
        self,
        script: Script,
        host: str,
        port: int,
        session_id: str,
        first_frame: int = 0,
        start_lead: float = PLAYER_START_LEAD_S,
    ) -> None:
        self.script = script
        self.session_id = session_id
        self.tally = CallerTally()
        self.frame = first_frame
        self.start_lead = start_lead
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.record = False  # count turns only inside the measurement window
        self._transport: asyncio.Transport | None = None
        self._request, self._accept = handshake_request(host, port, f"/ws/{session_id}")
        self._head = bytearray()
        self._parser: FrameParser | None = None
        self._readies = 0
        self._closing = False
        self._turn: Turn | None = None  # the turn whose reply we wait for
        self._reply: Turn | None = None  # the turn whose reply audio is arriving

    # ------------------------------------------------------------------- outgoing
    def send_frame(self) -> None:
        """Send the next 20 ms of the script (the pacer calls this on schedule)."""
        transport = self._transport
        if transport is None or self._closing:
            return
        script = self.script
        k = self.frame % script.cycle
        transport.write(script.wire[k])
        self.frame += 1
        self.tally.frames_sent += 1
        if k == script.last_speech:
            self._turn = Turn(clock()) if self.record else None
            if self._turn is not None:
                self.tally.turns.append(self._turn)
        elif k == script.endpoint_frame and self._turn is not None:
            self._turn.endpoint_frame = clock()

    def send_json(self, message: dict) -> None:
        if self._transport is not None and not self._closing:
            self._transport.write(masked_frame(OP_TEXT, json.dumps(message).encode()))

    def close(self, code: int = 1000) -> None:
        """Say goodbye (close frame) and drop the connection soon after."""
        if self._transport is None or self._closing:
            return
        self._closing = True
        self._transport.write(close_frame(code))
        asyncio.get_running_loop().call_later(2.0, self._transport.close)

    # ---------------------------------------------------------------- connection
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they write.
        self._transport = transport  # type: ignore[assignment]
        self._transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closing:
            self.tally.disconnects += 1
        self._closing = True
        self._transport = None
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"{self.session_id}: connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._parser is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                check_handshake(bytes(self._head[:end]), self._accept)
            except ProtocolError as exc:
                self._fail(exc)
                return
            data = bytes(self._head[end + 4 :])
            self._parser = FrameParser()
            self.send_json({"type": "start", "mode": "continuous", "sample_rate": 16000})
        try:
            messages = self._parser.feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            return
        now = clock()
        for opcode, payload in messages:
            self.tally.messages_in += 1
            if opcode == OP_BINARY:
                self._on_audio(now, len(payload))
            elif opcode == OP_TEXT:
                self._on_text(now, payload)
            elif opcode == OP_PING:
                if self._transport is not None:
                    self._transport.write(masked_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                self._on_close(payload)

    def _fail(self, exc: Exception) -> None:
        self.tally.error("protocol")
        if not self.ready.done():
            self.ready.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()

    def _on_close(self, payload: bytes) -> None:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        self.tally.close_codes[code] = self.tally.close_codes.get(code, 0) + 1
        if not self._closing:
            self.tally.disconnects += 1
            self._closing = True
            if self._transport is not None:
                self._transport.write(close_frame(1000))
        if self._transport is not None:
            self._transport.close()

    # ------------------------------------------------------------------ incoming
    def _on_text(self, now: float, payload: bytes) -> None:
        try:
            message = json.loads(payload)
            kind = message["type"]
        except (ValueError, KeyError, TypeError):
            self.tally.error("bad_message")
            return
        if kind == "audio_start":
            turn, self._turn = self._turn, None
            if turn is not None:
                turn.player = PlayerModel(int(message["sample_rate"]), self.start_lead)
            self._reply = turn
        elif kind == "audio_end":
            if self._reply is not None:
                self._reply.audio_end = now
            self._reply = None
        elif kind == "vad":
            if not message.get("speaking") and self._turn is not None:
                self._turn.vad_end = now
        elif kind == "interrupted":
            if self._reply is not None:
                self._reply.interrupted = True
            self._reply = None
        elif kind == "error":
            self.tally.error(str(message.get("code", "error")))
        elif kind == "ready":
            self._readies += 1
            if self._readies == 2 and not self.ready.done():  # after our `start`
                self.ready.set_result(None)

    def _on_audio(self, now: float, nbytes: int) -> None:
        self.tally.audio_bytes_in += nbytes
        reply = self._reply
        if reply is None or reply.player is None:
            self.tally.unmeasured_audio += 1  # a reply to a turn outside the window
            return
        if reply.first_audio is None:
            reply.first_audio = now
        reply.player.push(now, nbytes)

"""Fake Deepgram: live transcription over WebSocket (`/v1/listen`) and Aura speech
(`POST /v1/speak`).

Live: binary frames are linear16 audio; text frames are the control messages
`{"type": "KeepAlive"}`, `{"type": "Finalize"}` and `{"type": "CloseStream"}`. It answers
with `Results` messages (interim ones while audio arrives, `is_final` + `speech_final`
after `endpointing` ms of silence, `is_final` + `from_finalize` for a Finalize),
`Metadata` before closing on CloseStream, and closes with 1011 (NET-0001) after
`idle_timeout` seconds without audio or KeepAlive, as the service does. Words come from
the audio itself (`speechcodec`), so lost or repeated audio shows in the transcript.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes import speechcodec
from tests.fakes.base import FakeServer, Fault
from tests.fakes.latency import Delay, pause
from tests.fakes.openai import stream_audio

_ERR_CODES = {
    400: "Bad Request",
    401: "INVALID_AUTH",
    403: "INSUFFICIENT_PERMISSIONS",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_SERVER_ERROR",
}
#: Interim results at most this often (ms of received audio), unless set per fake.
INTERIM_EVERY_MS = 100


class FakeDeepgram(FakeServer):
    auth_prefix = "Token "

    def __init__(self, api_key: str = "dg-test-key-0123456789") -> None:
        super().__init__(api_key)
        self.idle_timeout = 10.0
        #: Extra delay before answering a Finalize.
        self.finalize_delay: Delay = 0.0
        #: Interim results at most this often (ms of received audio).
        self.interim_every_ms = INTERIM_EVERY_MS
        self.connections = 0
        self.keepalives = 0
        self.finalizes = 0
        self.close_streams = 0
        #: Every transcript sent with is_final, per connection order.
        self.finals: list[str] = []
        #: A fault for a connection that is already open (`after`: bytes from now on).
        self.live_fault: Fault | None = None

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/listen", self.listen)
        app.router.add_post("/v1/speak", self.speak)

    def error(self, status: int, retry_after: float | None = None) -> web.Response:
        headers = {"dg-request-id": str(uuid.uuid4())}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        body = {
            "err_code": _ERR_CODES.get(status, "ERROR"),
            "err_msg": "fake error",
            "request_id": headers["dg-request-id"],
        }
        return web.json_response(body, status=status, headers=headers)

    # ------------------------------------------------------------------ speak
    async def speak(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.log_request(request, body)
        if not self.authorized(request):
            return self.error(401)
        q = request.query
        if q.get("encoding") != "linear16" or q.get("container") != "none" or not body.get("text"):
            return self.error(400)
        fault = self.take_fault()
        if fault is not None and fault.kind == "status":
            return self.error(fault.status, fault.retry_after)
        if fault is not None and fault.kind == "hang":
            await self.hang()
            return self.error(500)
        await pause(self.first_delay)
        rate = int(float(q.get("sample_rate", "24000")))
        return await stream_audio(self, request, body["text"], rate, fault)

    # ------------------------------------------------------------------ listen
    async def listen(self, request: web.Request) -> web.StreamResponse:
        self.log_request(request, None)
        if not self.authorized(request):
            return self.error(401)
        q = request.query
        if q.get("encoding") != "linear16" or q.get("sample_rate") != str(speechcodec.RATE):
            return self.error(400)
        fault = self.take_fault()
        if fault is not None and fault.kind == "status":
            return self.error(fault.status, fault.retry_after)
        if fault is not None and fault.kind == "hang":
            await self.hang()
            return self.error(500)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        await _Live(self, ws, request, fault, int(q.get("endpointing", "10"))).run()
        return ws


class _Live:
    """One live-transcription connection."""

    def __init__(
        self,
        server: FakeDeepgram,
        ws: web.WebSocketResponse,
        request: web.Request,
        fault: Fault | None,
        endpointing_ms: int,
    ) -> None:
        self.server = server
        self.ws = ws
        self.request = request
        self.fault = fault
        self.endpointing_ms = endpointing_ms
        self.request_id = str(uuid.uuid4())
        self.buf = bytearray()  # audio of the utterance since the last final flush
        self.delivered = 0  # words of `buf` already sent as final
        self.received = 0
        self.since_interim = 0
        self.start = 0.0  # seconds of audio before `buf`
        self.interim_every = server.interim_every_ms

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.server.idle_timeout):
                    msg = await self.ws.receive()
            except TimeoutError:
                await self.ws.close(code=1011, message=b"NET-0001")
                return
            if msg.type == WSMsgType.BINARY:
                if await self.audio(msg.data):
                    return
            elif msg.type == WSMsgType.TEXT:
                if await self.control(msg.data):
                    return
            else:
                return

    async def audio(self, data: bytes) -> bool:
        if self.fault is None and self.server.live_fault is not None:
            self.fault, self.server.live_fault = self.server.live_fault, None
            self.fault.after += self.received
        self.buf += data
        self.received += len(data)
        self.since_interim += len(data)
        f = self.fault
        if f is not None and self.received >= f.after:
            if f.kind == "drop":
                self.server.abort(self.request)
                return True
            if f.kind == "error_event":
                error = {
                    "type": "Error",
                    "variant": "error",
                    "code": "NET-0000",
                    "description": "fake internal error",
                }
                await self.ws.send_json(error)
                await self.ws.close(code=1011, message=b"NET-0000")
                return True
            if f.kind == "malformed":
                self.fault = None
                await self.ws.send_str('{"type": "Results", "channel": ')
        words = speechcodec.decode(bytes(self.buf))
        pending = words[self.delivered :]
        quiet = speechcodec.trailing_silence_ms(bytes(self.buf))
        if pending and quiet >= self.endpointing_ms:
            await self.results(pending, is_final=True, speech_final=True)
            self.delivered = len(words)
        elif pending and self.since_interim >= speechcodec.RATE * 2 * self.interim_every // 1000:
            self.since_interim = 0
            await self.results(pending, is_final=False)
        return False

    async def control(self, raw: str) -> bool:
        try:
            kind = json.loads(raw).get("type")
        except (ValueError, AttributeError):
            await self.ws.close(code=1008, message=b"invalid control message")
            return True
        if kind == "KeepAlive":
            self.server.keepalives += 1
        elif kind == "Finalize":
            self.server.finalizes += 1
            if self.fault is not None and self.fault.kind == "hang_finalize":
                return False
            await pause(self.server.finalize_delay)
            words = speechcodec.decode(bytes(self.buf))
            await self.results(words[self.delivered :], is_final=True, from_finalize=True)
            self.start += len(self.buf) / 2 / speechcodec.RATE
            self.buf = bytearray()
            self.delivered = 0
        elif kind == "CloseStream":
            self.server.close_streams += 1
            await self.ws.send_json(
                {
                    "type": "Metadata",
                    "transaction_key": "deprecated",
                    "request_id": self.request_id,
                    "sha256": "0" * 64,
                    "created": "2026-01-01T00:00:00.000Z",
                    "duration": self.received / 32000,
                    "channels": 1,
                    "models": [str(uuid.uuid4())],
                    "model_info": {},
                }
            )
            await self.ws.close(code=1000)
            return True
        return False

    async def results(
        self,
        words: list[str],
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
    ) -> None:
        text = " ".join(words)
        if is_final:
            self.server.finals.append(text)
        message: dict[str, Any] = {
            "type": "Results",
            "channel_index": [0, 1],
            "start": self.start,
            "duration": len(self.buf) / 2 / speechcodec.RATE,
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {
                        "transcript": text,
                        "confidence": 0.99,
                        "words": [
                            {
                                "word": w,
                                "start": 0.0,
                                "end": 0.1,
                                "confidence": 0.99,
                                "punctuated_word": w,
                            }
                            for w in words
                        ],
                    }
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_uuid": "fake",
                "model_info": {"name": "general", "version": "fake", "arch": "nova-3"},
            },
        }
        await self.ws.send_json(message)

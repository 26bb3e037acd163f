"""Fake OpenAI API: streamed chat completions (`data: {chunk}` ... `data: [DONE]`),
transcriptions (multipart WAV in, `{"text": ...}` out) and speech (`response_format=pcm`:
raw 24 kHz PCM16, streamed), with OpenAI's error shape
`{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes import speechcodec
from tests.fakes.anthropic import tokens
from tests.fakes.base import FakeServer, Fault
from tests.fakes.latency import pause

_STATUS_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}
SPEECH_RATE = 24000
#: Synthesised audio per character of input (about natural speaking speed).
MS_PER_CHAR = 50
#: An odd size on purpose: chunks must be re-aligned to whole samples by the client.
CHUNK_BYTES = 4801


def default_reply(body: dict[str, Any]) -> str:
    last = body["messages"][-1]["content"]
    return f"You mentioned {last.strip().rstrip('.')}. How would you explain it to a friend?"


class FakeOpenAI(FakeServer):
    def __init__(self, api_key: str = "sk-test-openai-0123456789") -> None:
        super().__init__(api_key)
        self.reply: Callable[[dict[str, Any]], str] = default_reply

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/audio/transcriptions", self.transcriptions)
        app.router.add_post("/v1/audio/speech", self.speech)

    def error(self, status: int, retry_after: float | None = None) -> web.Response:
        etype, code = _STATUS_TYPES.get(status, ("server_error", None))
        headers = {"x-request-id": "req_fake"}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        body = {"error": {"message": f"fake {etype}", "type": etype, "param": None, "code": code}}
        return web.json_response(body, status=status, headers=headers)

    async def _gate(
        self, request: web.Request, body: Any
    ) -> tuple[web.Response | None, Fault | None]:
        """Auth, logging, status and hang faults, first-byte delay."""
        self.log_request(request, body)
        if not self.authorized(request):
            return self.error(401), None
        fault = self.take_fault()
        if fault is not None and fault.kind == "status":
            return self.error(fault.status, fault.retry_after), None
        if fault is not None and fault.kind == "hang":
            await self.hang()
            return self.error(500), None
        await pause(self.first_delay)
        return None, fault

    # ------------------------------------------------------------------ chat
    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._chat(request)
        except ConnectionResetError:  # the client stopped reading (a barge-in)
            return web.Response(status=499)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        early, fault = await self._gate(request, body)
        if early is not None:
            return early
        if not body.get("stream") or body["messages"][0]["role"] != "system":
            return self.error(400)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": body["model"],
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            return f"data: {json.dumps(data)}\n\n".encode()

        await resp.write(chunk({"role": "assistant", "content": ""}))
        for i, piece in enumerate(tokens(self.reply(body))):
            if fault is not None and i == fault.after:
                if fault.kind == "drop":
                    self.abort(request)
                    return resp
                if fault.kind == "malformed":
                    await resp.write(b'data: {"id": "chatcmpl-fake", "choi\n\n')
                if fault.kind == "error_event":
                    err = {"error": {"message": "fake", "type": "server_error", "code": None}}
                    await resp.write(f"data: {json.dumps(err)}\n\n".encode())
                    await resp.write_eof()
                    return resp
            if i:
                await pause(self.chunk_delay)
            await resp.write(chunk({"content": piece}))
        await resp.write(chunk({}, "stop"))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    # ------------------------------------------------------------------ transcription
    async def transcriptions(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        audio = upload.file.read() if hasattr(upload, "file") else b""
        meta = {k: v for k, v in form.items() if k != "file"}
        early, fault = await self._gate(request, {**meta, "file_bytes": len(audio)})
        if early is not None:
            return early
        try:
            with wave.open(io.BytesIO(audio)) as w:
                if w.getframerate() != speechcodec.RATE or w.getsampwidth() != 2:
                    return self.error(400)
                pcm = w.readframes(w.getnframes())
        except (wave.Error, EOFError):
            return self.error(400)
        if fault is not None and fault.kind in ("drop", "malformed"):
            if fault.kind == "drop":
                self.abort(request)
            return web.Response(text='{"text": ', content_type="application/json")
        return web.json_response({"text": " ".join(speechcodec.decode(pcm))})

    # ------------------------------------------------------------------ speech
    async def speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        early, fault = await self._gate(request, body)
        if early is not None:
            return early
        if body.get("response_format") != "pcm" or not body.get("input"):
            return self.error(400)
        return await stream_audio(self, request, body["input"], SPEECH_RATE, fault)


async def stream_audio(
    server: FakeServer, request: web.Request, text: str, rate: int, fault: Fault | None
) -> web.StreamResponse:
    """Raw PCM16 for `text`, in odd-sized chunks, honouring delays and drop faults."""
    audio = speechcodec.tone(len(text) * MS_PER_CHAR, rate)
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await resp.prepare(request)
    for i, start in enumerate(range(0, len(audio), CHUNK_BYTES)):
        if fault is not None and fault.kind == "drop" and i == fault.after:
            server.abort(request)
            return resp
        if i:
            await pause(server.chunk_delay)
        try:
            await resp.write(audio[start : start + CHUNK_BYTES])
        except ConnectionResetError:  # the client stopped listening (a barge-in)
            return resp
    await resp.write_eof()
    return resp

"""Fake Anthropic Messages API: `POST /v1/messages` with `stream: true`, answered with the
documented SSE events (message_start, content_block_start, ping, content_block_delta
text_delta..., content_block_stop, message_delta, message_stop) and the documented error
shapes: HTTP `{"type":"error","error":{"type":...,"message":...}}` and an in-stream
`event: error`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeServer
from tests.fakes.latency import pause

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def default_reply(body: dict[str, Any]) -> str:
    last = body["messages"][-1]["content"]
    return f"So the key idea is {last.strip().rstrip('.')}. Why do you think that works?"


def tokens(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text)


class FakeAnthropic(FakeServer):
    auth_header = "x-api-key"
    auth_prefix = ""

    def __init__(self, api_key: str = "sk-ant-test-0123456789") -> None:
        super().__init__(api_key)
        self.reply: Callable[[dict[str, Any]], str] = default_reply

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.messages)

    def authorized(self, request: web.Request) -> bool:
        """The API takes the key as `x-api-key` or as a bearer token (the SDK in use
        sends the latter)."""
        h = request.headers
        return h.get("x-api-key") == self.api_key or (
            h.get("Authorization") == "Bearer " + self.api_key
        )

    def error(self, status: int, retry_after: float | None = None, etype: str = "") -> web.Response:
        etype = etype or _STATUS_TYPES.get(status, "api_error")
        headers = {"request-id": "req_fake"}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        body = {"type": "error", "error": {"type": etype, "message": f"fake {etype}"}}
        return web.json_response(body, status=status, headers=headers)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._messages(request)
        except ConnectionResetError:  # the client stopped reading (a barge-in)
            return web.Response(status=499)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.log_request(request, body)
        if not self.authorized(request):
            return self.error(401)
        if not body.get("stream") or not body.get("messages") or not body.get("max_tokens"):
            return self.error(400)
        fault = self.take_fault()
        if fault is not None and fault.kind == "status":
            return self.error(fault.status, fault.retry_after, fault.error_type)
        if fault is not None and fault.kind == "hang":
            await self.hang()
            return self.error(500)
        await pause(self.first_delay)
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "request-id": "req_fake"}
        )
        await resp.prepare(request)

        async def send(event: str, data: dict[str, Any] | str) -> None:
            payload = data if isinstance(data, str) else json.dumps(data)
            await resp.write(f"event: {event}\ndata: {payload}\n\n".encode())

        pieces = tokens(self.reply(body))
        await send(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": body["model"],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 25, "output_tokens": 1},
                },
            },
        )
        await send(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        await send("ping", {"type": "ping"})
        for i, piece in enumerate(pieces):
            if fault is not None and i == fault.after:
                if fault.kind == "drop":
                    self.abort(request)
                    return resp
                if fault.kind == "malformed":
                    await send("content_block_delta", '{"type": "content_block_delta", "ind')
                if fault.kind == "error_event":
                    etype = fault.error_type or "overloaded_error"
                    await send(
                        "error",
                        {"type": "error", "error": {"type": etype, "message": "Overloaded"}},
                    )
                    await resp.write_eof()
                    return resp
            if i:
                await pause(self.chunk_delay)
            await send(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
        await send("content_block_stop", {"type": "content_block_stop", "index": 0})
        await send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(pieces)},
            },
        )
        await send("message_stop", {"type": "message_stop"})
        await resp.write_eof()
        return resp

"""The real exporter really sends: `python -m server` with OTEL_EXPORTER_OTLP_ENDPOINT
pointing at a loopback OTLP/HTTP receiver (aiohttp, decoding the protobuf), one spoken
push-to-talk turn over the WebSocket with the simulated providers, and the turn's spans
arrive with the service name, their nesting, ids and the providers' known delays."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.server_process import ServerProcess, free_port

pytestmark = pytest.mark.slow

REQUEST_ID = "otlp-trace-0001"


def _value(v: AnyValue) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


class Receiver:
    """A collector that keeps what it is sent: spans as dicts, with their resource."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        self.content_types: set[str] = set()
        self.arrived = asyncio.Event()

    async def traces(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.content_types.add(request.content_type)
        body = ExportTraceServiceRequest.FromString(await request.read())
        for rs in body.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        {
                            "name": s.name,
                            "scope": ss.scope.name,
                            "resource": resource,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent": s.parent_span_id.hex(),
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                            "attributes": {a.key: _value(a.value) for a in s.attributes},
                            "events": {e.name: e.time_unix_nano for e in s.events},
                        }
                    )
        if any(s["name"] == "voice.turn" for s in self.spans):
            self.arrived.set()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", recv.traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield recv, port
    finally:
        await runner.cleanup()


async def _spoken_turn(server: ServerProcess, token: str) -> dict[str, Any]:
    got: dict[str, Any] = {}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"{server.ws}/ws/otlp-session?token={token}", headers={"X-Request-ID": REQUEST_ID}
        ) as ws,
    ):
        assert json.loads((await ws.receive()).data)["type"] == "ready"
        await ws.send_json({"type": "start", "mode": "push_to_talk"})
        assert json.loads((await ws.receive()).data)["type"] == "ready"
        await ws.send_json({"type": "talk_start"})
        for _ in range(25):
            await ws.send_bytes(b"\x01\x02" * 320)
        await ws.send_json({"type": "talk_end"})
        async with asyncio.timeout(20):
            while not {"response_done", "audio_end"} <= got.keys():
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    event = json.loads(msg.data)
                    got.setdefault(event["type"], event)
    return got


async def test_the_otlp_exporter_delivers_a_turn_to_a_loopback_collector(tmp_path, receiver):
    recv, port = receiver
    server = ServerProcess(
        tmp_path,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_SERVICE_NAME": "lva-otlp-test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "STT_PROVIDERS": "simulated",
            "LLM_PROVIDERS": "simulated",
            "TTS_PROVIDERS": "simulated",
        },
    )
    await asyncio.to_thread(server.start)
    try:
        token = await asyncio.to_thread(server.learner)
        seen = await _spoken_turn(server, token)
        async with asyncio.timeout(15):
            await recv.arrived.wait()
    finally:
        code = await asyncio.to_thread(server.stop)
    assert code == 0, server.logs()
    assert "audio_start" in seen and seen["response_done"]["text"]

    assert recv.content_types == {"application/x-protobuf"}
    by = {s["name"]: s for s in recv.spans}
    assert set(by) == {
        "voice.turn",
        "voice.endpointing",
        "voice.stt",
        "voice.llm",
        "voice.tts",
        "voice.playout",
        "voice.capture",
    }, [s["name"] for s in recv.spans]
    turn = by["voice.turn"]
    assert turn["resource"]["service.name"] == "lva-otlp-test"
    assert turn["scope"] == "learning-voice-agent.voice"
    assert turn["parent"] == ""
    assert turn["attributes"]["session.id"] == "otlp-session"
    assert turn["attributes"]["request.id"] == REQUEST_ID
    assert turn["attributes"]["voice.mode"] == "push_to_talk"
    assert turn["attributes"]["turn.id"] == 1
    for span in recv.spans:
        if span is not turn:
            assert span["trace_id"] == turn["trace_id"] and span["parent"] == turn["span_id"]
            assert turn["start"] <= span["start"] <= span["end"] <= turn["end"]
    assert by["voice.llm"]["attributes"]["voice.provider"] == "simulated"

    def ms(span: dict[str, Any]) -> float:
        return (span["end"] - span["start"]) / 1e6

    # The simulated providers' fixed delays: final transcript 150 ms after the turn ends,
    # first token 300 ms after the request, first audio 100 ms after the TTS request (the
    # event loop's timers may fire up to a millisecond early).
    assert 149 <= ms(by["voice.stt"]) < 1000
    llm = by["voice.llm"]
    assert 299 <= (llm["events"]["first_token"] - llm["start"]) / 1e6 < 1000
    assert 99 <= (by["voice.playout"]["start"] - by["voice.tts"]["start"]) / 1e6 < 1000
    assert ms(by["voice.playout"]) > 100  # the reply's audio, played at real time
    assert '"spans_dropped": 0' in server.logs()

"""Turn traces through the real app: a spoken push-to-talk turn over the WebSocket
(`create_app`, in-test providers, an in-memory span exporter) gives one `voice.turn`
whose stages agree with what the client saw and when; spans a collector refuses reach
`lva_trace_spans_dropped_total`; and with tracing off the server never loads the
OpenTelemetry SDK."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from admin.hub import AdminHub
from pipelines.registry import Providers
from server.app import create_app
from server.appkeys import ADMIN
from server.otel import OtelTracing
from server.settings import Settings
from tests.fakes_engine import ScriptedLLM, ScriptedSTT, ToneTTS
from tests.server_process import ROOT

WORDS = "how does spaced repetition work"
REPLY = "It spaces reviews out. Each one comes later."
REQUEST_ID = "trace-test-0001"
#: Monotonic -> wall time is converted once per turn; allow for that and for rounding.
SLACK_NS = 2_000_000


@dataclass
class Seen:
    """What the client sent and received, with its wall-clock time (ns)."""

    sent: dict[str, int] = field(default_factory=dict)
    got: dict[str, int] = field(default_factory=dict)
    audio_bytes: int = 0
    last_audio: int = 0
    final: str = ""


async def _turn(client: TestClient, sid: str, token: str) -> Seen:
    seen = Seen()
    ws = await client.ws_connect(f"/ws/{sid}?token={token}", headers={"X-Request-ID": REQUEST_ID})
    try:
        assert json.loads((await ws.receive()).data)["type"] == "ready"
        await ws.send_json({"type": "start", "mode": "push_to_talk", "sample_rate": 16000})
        assert json.loads((await ws.receive()).data)["type"] == "ready"
        seen.sent["talk_start"] = time.time_ns()
        await ws.send_json({"type": "talk_start"})
        for _ in range(25):  # half a second of audio
            await ws.send_bytes(b"\x01\x02" * 320)
        seen.sent["talk_end"] = time.time_ns()
        await ws.send_json({"type": "talk_end"})
        async with asyncio.timeout(10):
            while not {"response_done", "audio_end"} <= seen.got.keys():
                msg = await ws.receive()
                now = time.time_ns()
                if msg.type is WSMsgType.BINARY:
                    seen.audio_bytes += len(msg.data)
                    seen.last_audio = now
                    continue
                assert msg.type is WSMsgType.TEXT, msg
                event = json.loads(msg.data)
                kind = event["type"]
                if kind == "transcript" and event["final"]:
                    kind, seen.final = "transcript_final", event["text"]
                seen.got.setdefault(kind, now)
    finally:
        await ws.close()
    return seen


async def _spans(exporter: InMemorySpanExporter, tracing: OtelTracing) -> list[ReadableSpan]:
    """The turn is traced once its capture is handed over, just after the reply ends."""
    async with asyncio.timeout(5):
        while True:
            await tracing.flush()
            spans = list(exporter.get_finished_spans())
            if any(s.name == "voice.turn" for s in spans):
                return spans
            await asyncio.sleep(0.02)


async def test_a_spoken_turn_over_the_websocket_is_traced_as_the_client_saw_it(tmp_path):
    exporter = InMemorySpanExporter()
    tracing = OtelTracing(exporter, "lva-test")
    providers = Providers(stt=ScriptedSTT([WORDS]), llm=ScriptedLLM(REPLY), tts=ToneTTS(0.2))
    settings = Settings.from_env({}, database_path=str(tmp_path / "c.db"))
    client = TestClient(TestServer(create_app(settings, providers=providers, tracing=tracing)))
    await client.start_server()
    try:
        learner = await client.post("/api/learners", json={})
        token = (await learner.json())["learner_token"]
        seen = await _turn(client, "traced-session", token)
        spans = await _spans(exporter, tracing)
    finally:
        await client.close()
    assert seen.final == WORDS

    by = {s.name: s for s in spans}
    assert sorted(by) == sorted(
        [
            "voice.turn",
            "voice.endpointing",
            "voice.stt",
            "voice.llm",
            "voice.tts",
            "voice.playout",
            "voice.capture",
        ]
    )
    assert len(spans) == 7
    turn = by["voice.turn"]
    assert dict(turn.attributes or {}) | {"voice.first_audio_ms": 0} == {
        "session.id": "traced-session",
        "turn.id": 1,
        "voice.mode": "push_to_talk",
        "request.id": REQUEST_ID,
        "voice.interrupted": False,
        "voice.speculative": False,
        "voice.first_audio_ms": 0,
    }
    assert turn.resource.attributes["service.name"] == "lva-test"
    assert by["voice.stt"].attributes["voice.provider"] == "fake-stt"
    assert by["voice.llm"].attributes["voice.provider"] == "fake-llm"
    assert by["voice.tts"].attributes["voice.provider"] == "fake-tts"
    for span in spans:
        if span is not turn:
            assert span.parent is not None and span.parent.span_id == turn.context.span_id
            assert turn.start_time <= span.start_time <= span.end_time <= turn.end_time
        values = " ".join(str(v) for v in (span.attributes or {}).values()).lower()
        assert "spaced" not in values and "reviews" not in values, span.name

    def before(span_ns: int, client_ns: int) -> bool:
        return span_ns <= client_ns + SLACK_NS

    end, stt, llm = by["voice.endpointing"], by["voice.stt"], by["voice.llm"]
    tts, playout, capture = by["voice.tts"], by["voice.playout"], by["voice.capture"]
    # The server heard the button after the client pressed and released it...
    assert before(seen.sent["talk_start"], end.start_time)
    assert before(seen.sent["talk_end"], end.end_time)
    # ...then each stage ended before the client saw what it produced.
    assert end.end_time == stt.start_time
    assert before(stt.end_time, seen.got["transcript_final"])
    assert stt.end_time <= llm.start_time
    assert before(llm.end_time, seen.got["response_done"])
    assert llm.start_time <= tts.start_time <= playout.start_time
    assert before(playout.start_time, seen.got["audio_start"])
    assert before(tts.end_time, seen.got["audio_end"])
    # Playout lasts as long as the audio the client got, and ends after it arrived.
    audio_ns = seen.audio_bytes / 2 / 16000 * 1e9
    assert seen.audio_bytes == 2 * 0.2 * 16000 * 2  # two sentences of 0.2 s, PCM16
    assert abs((playout.end_time - playout.start_time) - audio_ns) < 20_000_000
    # The last chunk arrived before its playout ended, at most the 300 ms lead (+ a chunk).
    assert 0 <= playout.end_time - seen.last_audio <= 400_000_000 + SLACK_NS
    # The capture is handed over once the reply is done.
    assert llm.end_time <= capture.start_time and tts.end_time <= capture.start_time
    assert before(seen.got["response_done"], capture.end_time + 1_000_000_000)


class RefusingCollector(InMemorySpanExporter):
    def export(self, spans):  # type: ignore[no-untyped-def]
        super().export(spans)
        return SpanExportResult.FAILURE


async def test_spans_the_collector_refuses_are_counted_in_the_metrics(tmp_path):
    """A typed turn over the WebSocket: traced without endpointing or recognition."""
    exporter = RefusingCollector()
    tracing = OtelTracing(exporter, "lva-test")
    providers = Providers(stt=ScriptedSTT([]), llm=ScriptedLLM("Sure."), tts=ToneTTS(0.1))
    settings = Settings.from_env({}, database_path=str(tmp_path / "c.db"))
    app = create_app(settings, providers=providers, tracing=tracing)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        token = (await (await client.post("/api/learners", json={})).json())["learner_token"]
        async with client.ws_connect(f"/ws/typed-session?token={token}") as ws:
            assert json.loads((await ws.receive()).data)["type"] == "ready"
            await ws.send_json({"type": "text", "text": "quiz me"})
            async with asyncio.timeout(10):
                while True:
                    msg = await ws.receive()
                    if msg.type is WSMsgType.TEXT and json.loads(msg.data)["type"] == "audio_end":
                        break
        spans = await _spans(exporter, tracing)
        hub: AdminHub = app[ADMIN]
        hub.sample_gauges()
        text = await (await client.get("/metrics")).text()
    finally:
        await client.close()
    assert sorted(s.name for s in spans) == [
        "voice.capture",
        "voice.llm",
        "voice.playout",
        "voice.tts",
        "voice.turn",
    ]
    dropped = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }["lva_trace_spans_dropped_total"]
    assert dropped == 5 == tracing.spans_dropped


OFF_CHECK = textwrap.dedent(
    """
    import asyncio, json, sys
    from aiohttp.test_utils import TestClient, TestServer
    from server.app import create_app
    from server.settings import Settings

    async def main():
        app = create_app(Settings.from_env())
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            resp = await client.post("/api/conversation", json={"text": "hello"})
            assert resp.status == 200, await resp.text()
        finally:
            await client.close()
        loaded = sorted(
            m for m in sys.modules
            if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))
            or m in ("server.otel", "server.turn_tracer")
        )
        print(json.dumps(loaded))

    asyncio.run(main())
    """
)


def _loaded_with(tmp_path, **env: str) -> list[str]:
    base = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "DATABASE_PATH": str(tmp_path / "c.db"),
        "STT_PROVIDERS": "simulated",
        "LLM_PROVIDERS": "simulated",
        "TTS_PROVIDERS": "simulated",
        "LOG_LEVEL": "warning",
    }
    out = subprocess.run(
        [sys.executable, "-c", OFF_CHECK],
        env=base | env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_with_tracing_off_the_sdk_is_never_imported(tmp_path):
    assert _loaded_with(tmp_path) == []
    # The same check sees it when tracing is on (nothing listens there: spans are dropped).
    on = _loaded_with(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert "server.otel" in on and any(m.startswith("opentelemetry.sdk") for m in on)

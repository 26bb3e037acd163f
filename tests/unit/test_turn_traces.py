"""Turn traces: the spans of a turn nest in the order of its stages, last what its clock
marks say, carry ids and never words; a turn cut off ends its stages where it was cut;
export that falls behind or fails is counted, never waited for."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Sequence
from unittest import mock

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from admin.observer import HubObserver
from pipelines import events as ev
from pipelines.outbox import Outbox
from pipelines.ports import NullObserver, SessionObserver, TurnTrace
from pipelines.session import Session, SessionConfig
from server.observers import FanOut
from server.otel import OtelTracing
from server.turn_spans import STAGES
from server.turn_tracer import TurnTracer
from tests.fakes_engine import DictStore, ListSink, ScriptedLLM, ScriptedSTT, ToneTTS

STAGE_NAMES = [name for name, *_ in STAGES]
#: A push-to-talk turn on the session's clock (seconds), as the Session marks it.
MARKS = {
    "speech_start": 100.0,
    "speech_end": 101.5,
    "endpoint": 101.5,
    "stt_final": 101.72,
    "llm_request": 101.7234,
    "llm_first_token": 102.01,
    "tts_request": 102.05,
    "first_audio": 102.16,
    "llm_done": 102.4,
    "tts_done": 103.1,
    "capture_start": 103.2,
    "capture_handoff": 103.2011,
    "playout_end": 103.45,
}
OFFSET = 1_790_000_000.25  # epoch = clock + OFFSET
PROVIDERS = {"stt": "deepgram", "llm": "chain:anthropic,local", "tts": "piper"}


def trace(marks: dict[str, float] = MARKS, **kw: object) -> TurnTrace:
    fields: dict[str, object] = {
        "session_id": "sess-1",
        "turn_id": 3,
        "mode": "push_to_talk",
        "marks": marks,
        "epoch_offset": OFFSET,
        "interrupted": False,
        "providers": PROVIDERS,
    }
    return TurnTrace(**{**fields, **kw})  # type: ignore[arg-type]


def tracing(exporter: InMemorySpanExporter | None = None, **kw: object) -> OtelTracing:
    return OtelTracing(exporter or InMemorySpanExporter(), "test-service", **kw)  # type: ignore[arg-type]


async def spans_of(*turns: TurnTrace) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    t = tracing(exporter)
    for turn in turns:
        t.observer.turn_finished(turn)
    await t.flush()
    await t.aclose()
    return list(exporter.get_finished_spans())


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    named = {s.name: s for s in spans}
    assert len(named) == len(spans), "one span per name in one turn"
    return named


def ns(mark: float) -> float:
    return (mark + OFFSET) * 1e9


async def test_the_spans_of_a_turn_nest_in_order_and_last_what_the_marks_say():
    spans = by_name(await spans_of(trace()))
    assert set(spans) == {"voice.turn", *STAGE_NAMES}
    root = spans["voice.turn"]
    assert root.parent is None
    assert root.start_time == pytest.approx(ns(100.0), abs=1000)  # 1 us: one float conversion
    assert root.end_time - root.start_time == round((103.45 - 100.0) * 1e9)
    stages = [spans[n] for n in STAGE_NAMES]
    for span in stages:
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.context.trace_id == root.context.trace_id
        assert root.start_time <= span.start_time <= span.end_time <= root.end_time
    starts = [s.start_time for s in stages]
    assert starts == sorted(starts), "stages start in the order of a turn"
    expected = {
        "voice.endpointing": 101.5 - 100.0,
        "voice.stt": 101.72 - 101.5,
        "voice.llm": 102.4 - 101.7234,
        "voice.tts": 103.1 - 102.05,
        "voice.playout": 103.45 - 102.16,
        "voice.capture": 103.2011 - 103.2,
    }
    for name, start_mark, _, _ in STAGES:
        span = spans[name]
        seconds = expected[name]
        assert span.end_time - span.start_time == pytest.approx(seconds * 1e9, abs=2), name
        offset = (MARKS[start_mark] - 100.0) * 1e9
        assert span.start_time - root.start_time == pytest.approx(offset, abs=2), name
    # Sequential stages touch: the turn was judged over, then transcribed, then answered.
    assert spans["voice.endpointing"].end_time == spans["voice.stt"].start_time
    assert spans["voice.stt"].end_time <= spans["voice.llm"].start_time
    events = {e.name: e.timestamp for s in stages for e in s.events}
    assert events["speech_end"] - root.start_time == pytest.approx(1.5e9, abs=2)
    assert events["first_token"] - spans["voice.llm"].start_time == pytest.approx(
        (102.01 - 101.7234) * 1e9, abs=2
    )


async def test_spans_carry_ids_mode_and_providers():
    spans = by_name(await spans_of(trace()))
    root = spans["voice.turn"]
    assert dict(root.attributes or {}) == {
        "session.id": "sess-1",
        "turn.id": 3,
        "voice.mode": "push_to_talk",
        "voice.interrupted": False,
        "voice.speculative": False,
        "voice.first_audio_ms": 660.0,
    }
    assert root.resource.attributes["service.name"] == "test-service"
    assert spans["voice.llm"].attributes == {"voice.provider": "chain:anthropic,local"}
    assert spans["voice.stt"].attributes == {"voice.provider": "deepgram"}
    assert spans["voice.tts"].attributes == {"voice.provider": "piper"}
    for name in ("voice.endpointing", "voice.playout", "voice.capture"):
        assert not spans[name].attributes, name


async def test_the_request_id_of_the_connection_is_on_the_turn():
    from admin.context import request_id_var

    token = request_id_var.set("req-0123456789")
    try:
        spans = by_name(await spans_of(trace()))
    finally:
        request_id_var.reset(token)
    assert spans["voice.turn"].attributes["request.id"] == "req-0123456789"
    assert "request.id" not in spans["voice.stt"].attributes


async def test_a_turn_cut_off_ends_its_stages_where_it_was_cut():
    cut = {
        k: v
        for k, v in MARKS.items()
        if k not in ("llm_done", "tts_done", "playout_end", "capture_start", "capture_handoff")
    }
    cut |= {"interrupted": 102.9, "playout_end": 102.9, "capture_start": 102.91}
    cut["capture_handoff"] = 102.92
    spans = by_name(await spans_of(trace(cut, interrupted=True)))
    assert spans["voice.turn"].attributes["voice.interrupted"] is True
    for name in ("voice.llm", "voice.tts", "voice.playout"):
        assert spans[name].end_time == pytest.approx(ns(102.9), abs=1000), name
    assert spans["voice.turn"].end_time == pytest.approx(ns(102.92), abs=1000)


async def test_a_typed_turn_has_no_endpointing_or_recognition():
    typed = {k: v for k, v in MARKS.items() if k not in ("speech_start", "endpoint")}
    typed["stt_final"] = typed["speech_end"]
    spans = by_name(await spans_of(trace(typed)))
    assert "voice.endpointing" not in spans and "voice.stt" not in spans
    assert spans["voice.turn"].start_time == pytest.approx(ns(101.5), abs=1000)


async def test_a_reply_that_never_started_has_no_stage_spans_of_its_own():
    early = {k: MARKS[k] for k in ("speech_start", "speech_end", "endpoint", "stt_final")}
    early |= {"llm_request": 101.73, "interrupted": 101.9}
    early |= {"capture_start": 101.91, "capture_handoff": 101.92}
    spans = by_name(await spans_of(trace(early, interrupted=True)))
    assert "voice.tts" not in spans and "voice.playout" not in spans
    assert spans["voice.llm"].end_time == pytest.approx(ns(101.9), abs=1000)


def _attribute_values(span: ReadableSpan) -> list[object]:
    values: list[object] = list((span.attributes or {}).values())
    values += list(span.resource.attributes.values())
    for event in span.events:
        values += [event.name, *(event.attributes or {}).values()]
    for link in span.links:
        values += list((link.attributes or {}).values())
    return values


async def test_a_real_session_s_turns_are_traced_without_their_words():
    """A Session with in-test providers: a voice turn and a barge-in traced end to end."""
    exporter = InMemorySpanExporter()
    t = tracing(exporter)
    words = "spaced repetition beats cramming"
    reply = "Review tomorrow. Then in three days. Then a week later."
    llm = ScriptedLLM(reply, gap=0.02)
    session = Session(
        "sess-words",
        stt=ScriptedSTT([words, "stop"]),
        llm=llm,
        tts=ToneTTS(0.3),
        store=DictStore(),
        captures=ListSink(),
        outbox=(outbox := Outbox()),
        config=SessionConfig(mode="push_to_talk", audio_lead_s=0.1),
        observer=FanOut(NullObserver(), t.observer),
    )
    async with session:
        session.talk_start()
        for _ in range(10):
            session.feed_audio(bytes(640))
        session.talk_end()
        await _until(outbox, ev.AudioStart)
        await asyncio.sleep(0.2)
        session.talk_start()  # the caller speaks over the reply: it is cut off
        await _until(outbox, ev.Interrupted)
        for _ in range(5):
            session.feed_audio(bytes(640))
        session.talk_end()
        await _until(outbox, ev.AudioEnd)
        await asyncio.sleep(0.3)  # its last 0.1 s plays out (then the turn is recorded)
    await t.aclose()
    spans = exporter.get_finished_spans()
    turns = sorted((s for s in spans if s.name == "voice.turn"), key=lambda s: s.start_time)
    assert [s.attributes["turn.id"] for s in turns] == [1, 2]
    assert [s.attributes["voice.interrupted"] for s in turns] == [True, False]
    first = by_name([s for s in spans if s.context.trace_id == turns[0].context.trace_id])
    assert set(first) == {"voice.turn", *STAGE_NAMES}, "the cut turn got as far as playout"
    assert first["voice.playout"].end_time <= turns[1].start_time + 1_000_000
    text = " ".join([words, reply, "stop"]).lower().replace(".", "").split()
    for span in spans:
        for value in _attribute_values(span):
            if isinstance(value, str):
                assert not set(value.lower().split()) & set(text), (span.name, value)
    assert {turn.attributes["session.id"] for turn in turns} == {"sess-words"}


async def _until(outbox: Outbox, kind: type[ev.Event]) -> None:
    async with asyncio.timeout(5):
        while not isinstance(await outbox.get(), kind):
            pass


class StuckExporter(InMemorySpanExporter):
    """Blocks in export until released: a collector that stopped answering."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(10)
        return super().export(spans)


async def test_spans_past_the_export_queue_are_dropped_and_counted_without_waiting():
    exporter = StuckExporter()
    t = tracing(exporter, max_queue=16, schedule_delay_ms=1)
    try:
        t.observer.turn_finished(trace())  # 7 spans: exported, and the export hangs
        await asyncio.to_thread(exporter.entered.wait, 5)
        t.observer.turn_finished(trace())  # 14 waiting
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(3):  # no room: not built, counted
            t.observer.turn_finished(trace())
        assert loop.time() - started < 0.05, "the loop never waits for the collector"
        assert t.spans_dropped == 21
    finally:
        exporter.release.set()
        await t.aclose()
    assert len(exporter.get_finished_spans()) == 14
    assert t.spans_exported == 14 and t.spans_dropped == 21


async def test_the_sdk_s_sampler_decides_once_per_turn(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    exporter = InMemorySpanExporter()
    t = tracing(exporter)
    for _ in range(200):
        t.observer.turn_finished(trace())
    await t.aclose()
    spans = exporter.get_finished_spans()
    turns = [s for s in spans if s.name == "voice.turn"]
    assert 60 < len(turns) < 140, "about half the turns"
    assert len(spans) == 7 * len(turns), "a turn is traced whole or not at all"
    assert t.spans_dropped == 0


class FailingExporter(InMemorySpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.FAILURE


async def test_spans_the_collector_refused_are_counted_as_dropped():
    t = tracing(FailingExporter())
    t.observer.turn_finished(trace())
    await t.aclose()
    assert t.spans_dropped == 7 and t.spans_exported == 0


def _protocol_methods() -> list[str]:
    return [
        name
        for name, member in vars(SessionObserver).items()
        if inspect.isfunction(member) and not name.startswith("_")
    ]


@pytest.mark.parametrize("cls", [NullObserver, HubObserver, FanOut, TurnTracer])
def test_every_observer_implements_every_report(cls: type) -> None:
    methods = _protocol_methods()
    assert "turn_finished" in methods
    missing = [m for m in methods if not callable(getattr(cls, m, None))]
    assert not missing, f"{cls.__name__} lacks {missing}"


def test_the_fan_out_passes_every_report_to_each_observer_in_order() -> None:
    calls: list[tuple[str, str]] = []
    first, second = mock.Mock(spec=NullObserver), mock.Mock(spec=NullObserver)
    for tag, m in (("a", first), ("b", second)):
        for name in _protocol_methods():
            getattr(m, name).side_effect = lambda *a, _n=name, _t=tag: calls.append((_n, _t))
    fan = FanOut(first, second)
    turn = trace()
    fan.turn_completed({"stt_final": 0.2}, "continuous")
    fan.provider_error("llm", "openai", "timeout")
    fan.provider_fallback("llm", "openai", "local")
    fan.provider_latency("tts", "piper", 0.1)
    fan.work_time("stt", 0.05)
    fan.audio_dropped(1.5)
    fan.turn_finished(turn)
    assert calls == [(n, t) for n in _protocol_methods() for t in ("a", "b")]
    second.turn_finished.assert_called_once_with(turn)

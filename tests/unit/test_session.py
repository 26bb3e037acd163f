"""The Session with in-test providers: event order, barge-in, what is remembered, and
that nothing outlives the session."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from pipelines import events as ev
from pipelines.outbox import Outbox
from pipelines.session import Session, SessionConfig, SessionInputError
from tests.fakes_engine import DictStore, ListSink, ScriptedLLM, ScriptedSTT, ToneTTS


def make_session(stt=None, llm=None, voice=None, store=None, sink=None, **cfg):
    outbox = Outbox()
    session = Session(
        "s1",
        stt=stt or ScriptedSTT(["hello there"]),
        llm=llm or ScriptedLLM(),
        tts=voice or ToneTTS(),
        store=store or DictStore(),
        captures=sink or ListSink(),
        outbox=outbox,
        config=SessionConfig(**cfg),
    )
    return session, outbox


async def until(condition, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (a condition on a fake, polled)
            await asyncio.sleep(0.02)


async def drain(outbox: Outbox, until: type[ev.Event], timeout: float = 5.0) -> list[ev.Event]:
    got: list[ev.Event] = []
    async with asyncio.timeout(timeout):
        while True:
            item = await outbox.get()
            got.append(item)
            if isinstance(item, until):
                return got


async def test_text_turn_event_order_and_capture():
    store, sink = DictStore(), ListSink()
    session, outbox = make_session(store=store, sink=sink, audio_lead_s=10.0)
    async with session:
        session.submit_text("I learned about photosynthesis")
        events = await drain(outbox, ev.AudioEnd)
        # Recorded once its 2 s of audio have played (released at once with this lead).
        await until(lambda: sink.captures, 4.0)
    kinds = [e.type for e in events]
    assert kinds[0] == "transcript" and events[0].final
    assert kinds.index("response_delta") < kinds.index("response_done")
    assert kinds.index("audio_start") < kinds.index("audio") < kinds.index("audio_end")
    assert kinds.index("response_done") < kinds.index("audio_end")
    done = next(e for e in events if isinstance(e, ev.ResponseDone))
    assert done.text == "First sentence here. Second sentence follows."
    deltas = "".join(e.text for e in events if isinstance(e, ev.ResponseDelta))
    assert deltas.strip() == done.text
    audio = sum(len(e.pcm) for e in events if isinstance(e, ev.AudioFrame))
    assert audio == 2 * 16000 * 2  # two sentences, one second each, PCM16
    assert [c.agent_text for c in sink.captures] == [done.text]
    assert store.data["s1"][0].user == "I learned about photosynthesis"


async def test_history_reaches_the_model_on_the_next_turn():
    llm = ScriptedLLM("Short answer.")
    session, outbox = make_session(llm=llm, voice=ToneTTS(0.1), audio_lead_s=10.0)
    async with session:
        session.submit_text("first topic")
        await drain(outbox, ev.AudioEnd)
        await asyncio.sleep(0.2)  # its 0.1 s of audio has played: recorded
        session.submit_text("second topic")
        await drain(outbox, ev.AudioEnd)
    assert llm.calls[1][0] == "second topic"
    assert [(x.user, x.agent) for x in llm.calls[1][1]] == [("first topic", "Short answer.")]


async def test_barge_in_cancels_reply_drops_audio_and_remembers_only_what_was_heard():
    store, sink = DictStore(), ListSink()
    llm = ScriptedLLM("One two three four. Five six seven eight. Nine ten eleven twelve.", gap=0.1)
    session, outbox = make_session(llm=llm, store=store, sink=sink, audio_lead_s=0.1)
    async with session:
        session.submit_text("tell me")
        events = await drain(outbox, ev.AudioStart)
        # Let about half a second of the first sentence play, then interrupt.
        await asyncio.sleep(0.5)
        session.interrupt()
        events += await drain(outbox, ev.Interrupted)
        await asyncio.sleep(0.3)
        assert len(outbox) == 0, "no audio of the interrupted turn may follow"
    turn = next(e for e in events if isinstance(e, ev.AudioStart)).turn_id
    assert any(isinstance(e, ev.Interrupted) and e.turn_id == turn for e in events)
    assert llm.cancelled == 1
    assert sink.captures[0].metadata["interrupted"] is True
    heard = store.data["s1"][0].agent
    # ~0.5 s of a 1 s sentence of four words was played: two or three words remembered.
    assert heard.split() and heard.split()[0] == "One"
    assert "Five" not in heard and len(heard.split()) < 4


async def test_voice_turn_through_endpointer_to_reply():
    from tests.speech import silence, synth

    stt = ScriptedSTT(["what is spaced repetition"], interim_every=10)
    session, outbox = make_session(stt=stt, voice=ToneTTS(0.2), audio_lead_s=10.0)
    pcm = silence(0.5) + synth("What is spaced repetition?") + silence(1.0)
    async with session:
        for off in range(0, len(pcm), 640):
            session.feed_audio(pcm[off : off + 640])
        events = await drain(outbox, ev.AudioEnd)
    kinds = [e.type for e in events]
    assert kinds[0] == "vad" and events[0].speaking is True
    assert "transcript" in kinds
    interim = [e for e in events if isinstance(e, ev.Transcript) and not e.final]
    final = [e for e in events if isinstance(e, ev.Transcript) and e.final]
    assert interim and final and final[0].text == "what is spaced repetition"
    assert kinds.index("vad") < kinds.index("response_delta")
    assert any(isinstance(e, ev.Vad) and not e.speaking for e in events)
    # Pre-roll reached the recognizer: more frames than the voiced part alone.
    assert stt.pushed_frames[0] > 20


async def test_push_to_talk_ends_turn_on_release_only():
    stt = ScriptedSTT(["ptt words"])
    session, outbox = make_session(stt=stt, mode="push_to_talk", tts=False)
    async with session:
        with pytest.raises(SessionInputError):
            session.configure(SessionConfig(mode="shout"))
        session.talk_start()
        for _ in range(50):
            session.feed_audio(bytes(640))  # silence still goes to the recognizer in PTT
        session.talk_end()
        events = await drain(outbox, ev.ResponseDone)
    assert stt.pushed_frames == [50]
    assert any(isinstance(e, ev.Transcript) and e.text == "ptt words" for e in events)
    assert not any(isinstance(e, ev.AudioStart) for e in events)


async def test_no_task_outlives_the_session():
    before = asyncio.all_tasks()
    llm = ScriptedLLM("word " * 200, gap=0.01)
    stt = ScriptedSTT([])
    session, outbox = make_session(stt=stt, llm=llm)
    async with session:
        session.submit_text("go on and on")
        await drain(outbox, ev.ResponseDelta)
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()
    assert llm.cancelled == 1
    assert stt.streams[0].closed


async def test_failing_provider_reports_error_and_session_goes_on():
    class BrokenLLM(ScriptedLLM):
        async def stream(self, user_text, history):
            if user_text == "boom":
                raise RuntimeError("model exploded")
            async for d in super().stream(user_text, history):
                yield d

    session, outbox = make_session(llm=BrokenLLM("Fine."), tts=False)
    async with session:
        session.submit_text("boom")
        events = await drain(outbox, ev.Error)
        session.submit_text("again")
        events += await drain(outbox, ev.ResponseDone)
    assert any(isinstance(e, ev.Error) and e.code == "internal" for e in events)
    assert events[-1].text == "Fine."


async def test_end_stops_the_reply_and_returns_the_models_recap_of_what_was_heard():
    class TerseLLM(ScriptedLLM):
        def recap(self, history):
            super().recap(history)
            return f"{len(history)} exchanges"

    store = DictStore()
    llm = TerseLLM("One two three four. Five six seven eight.", gap=0.05)
    session, outbox = make_session(llm=llm, store=store, tts=False)
    async with session:
        session.submit_text("photosynthesis please")
        await drain(outbox, ev.ResponseDelta)
        summary = await session.end()
        assert any(isinstance(e, ev.Interrupted) for e in await drain(outbox, ev.Interrupted))
    assert summary == "1 exchanges"
    assert [(x.user, x.agent) for x in llm.recapped[0]] == [
        ("photosynthesis please", store.data["s1"][0].agent)
    ]
    assert store.data["s1"][0].agent.startswith("One")


async def test_leaving_mid_reply_records_what_was_heard_and_cancels_everything():
    before = asyncio.all_tasks()
    store, sink = DictStore(), ListSink()
    llm = ScriptedLLM("One two three four. Five six seven eight. Nine ten eleven twelve.", gap=0.1)
    session, outbox = make_session(llm=llm, store=store, sink=sink, audio_lead_s=0.1)
    async with session:
        session.submit_text("tell me")
        await drain(outbox, ev.AudioStart)
        await asyncio.sleep(0.5)  # about half of the first one-second sentence plays
    assert asyncio.all_tasks() - before == set()
    assert llm.cancelled == 1
    assert sink.captures[0].metadata["interrupted"] is True
    heard = store.data["s1"][0].agent.split()
    assert heard and heard[0] == "One" and len(heard) < 4
    assert session.turns == 1


async def test_the_transports_exception_leaves_the_session_unchanged_and_cleaned_up():
    before = asyncio.all_tasks()
    stt = ScriptedSTT([])
    session, outbox = make_session(stt=stt, llm=ScriptedLLM("word " * 200, gap=0.01))
    with pytest.raises(ConnectionResetError):
        async with session:
            session.submit_text("go on")
            await drain(outbox, ev.ResponseDelta)
            raise ConnectionResetError("client gone")
    assert asyncio.all_tasks() - before == set()
    assert stt.streams[0].closed


class _RecordingSTT(ScriptedSTT):
    """Keeps the bytes each utterance's recogniser stream was given."""

    def __init__(self, finals):
        super().__init__(finals)
        self.audio: list[bytearray] = []

    async def open(self, on_interim):
        stream = await super().open(on_interim)
        owner, push, finalize = self, stream.push, stream.finalize
        current = bytearray()

        def record(frame: bytes) -> None:
            current.extend(frame)
            push(frame)

        async def finish() -> str:
            owner.audio.append(bytearray(current))
            current.clear()
            return await finalize()

        def discard() -> None:
            current.clear()
            stream.frames = 0

        stream.push, stream.finalize, stream.discard = record, finish, discard
        return stream


@pytest.mark.parametrize("rate", [16000, 48000])
async def test_push_to_talk_turns_do_not_share_their_sub_frame_remainder(rate):
    """Chunks that are not whole frames: the last partial frame of turn 1 belongs to turn
    1 (padded with silence), and not one of its samples reaches turn 2's recogniser."""
    stt = _RecordingSTT(["first", "second"])
    session, outbox = make_session(stt=stt, mode="push_to_talk", tts=False, input_rate=rate)
    one, two = (1111).to_bytes(2, "little", signed=True), (-2222).to_bytes(2, "little", signed=True)
    chunk = 250 * rate // 16000  # samples: 15.6 ms, never a whole 20 ms frame
    async with session:
        for value, final in ((one, "first"), (two, "second")):
            session.talk_start()
            for _ in range(17):
                session.feed_audio(value * chunk)
            session.talk_end()
            events = await drain(outbox, ev.ResponseDone)
            assert any(isinstance(e, ev.Transcript) and e.text == final for e in events)
    first, second = stt.audio
    sent = 17 * 250 * 2  # bytes per turn at 16 kHz
    frame = 640
    assert len(first) % frame == 0 and len(second) % frame == 0
    if rate == 16000:
        assert first[:sent] == one * (sent // 2) and not first[sent:].strip(b"\0")
        assert second[:sent] == two * (sent // 2) and not second[sent:].strip(b"\0")
    samples = np.frombuffer(bytes(second), dtype=np.int16)
    # Turn 2 is a constant negative level: no sample anywhere near turn 1's positive level.
    assert not (samples > 500).any()
    assert len(first) >= sent and len(second) >= sent


async def test_a_client_that_leaves_as_soon_as_it_has_the_reply_loses_no_record():
    """The client closes right after `response_done`, while the exchange is being written
    to a slow store: the session's end waits for the record instead of cancelling it."""

    class SlowStore(DictStore):
        async def append_exchange(self, session_id, exchange):
            await asyncio.sleep(0.2)
            await super().append_exchange(session_id, exchange)

    store, sink = SlowStore(), ListSink()
    session, outbox = make_session(store=store, sink=sink, tts=False)
    async with session:
        session.submit_text("I learned about photosynthesis")
        await drain(outbox, ev.ResponseDone)
    assert [x.user for x in store.data["s1"]] == ["I learned about photosynthesis"]
    assert len(sink.captures) == 1 and sink.captures[0].metadata["interrupted"] is False


class HeardSTT(ScriptedSTT):
    """A streaming recogniser whose interims already say `heard`; its final (after
    `delay`, a round trip) is the next scripted one. Notes when it finalized."""

    def __init__(self, heard: str, final: str, delay: float) -> None:
        super().__init__([final], interim_every=5, delay=delay)
        self.heard = heard
        self.finalized_at: float | None = None

    async def open(self, on_interim):  # type: ignore[no-untyped-def]
        stream = await super().open(lambda _: on_interim(self.heard))
        original = stream.finalize

        async def finalize() -> str:
            text = await original()
            self.finalized_at = time.monotonic()
            return text

        stream.finalize = finalize  # type: ignore[method-assign]
        return stream


class TimedLLM(ScriptedLLM):
    def __init__(self) -> None:
        super().__init__("Sugar, yes. Plants make it from light.")
        self.called_at: list[float] = []

    async def stream(self, user_text, history):  # type: ignore[no-untyped-def]
        self.called_at.append(time.monotonic())
        async for piece in super().stream(user_text, history):
            yield piece


async def _push_to_talk(stt: HeardSTT, llm: TimedLLM) -> list[ev.Event]:
    session, outbox = make_session(stt=stt, llm=llm, mode="push_to_talk", tts=False)
    async with session:
        session.talk_start()
        for _ in range(20):
            session.feed_audio(bytes(640))
        session.talk_end()
        return await drain(outbox, ev.ResponseDone)


async def test_push_to_talk_answers_the_last_interim_while_a_streaming_final_comes():
    stt = HeardSTT("Photosynthesis makes sugar.", "photosynthesis makes sugar", delay=0.6)
    llm = TimedLLM()
    events = await _push_to_talk(stt, llm)
    # One model call, started at the release: before the final transcript arrived.
    assert [text for text, _ in llm.calls] == ["Photosynthesis makes sugar."]
    assert stt.finalized_at is not None and llm.called_at[0] < stt.finalized_at - 0.4
    done = [e for e in events if isinstance(e, ev.ResponseDone)]
    assert done[0].text == llm.reply
    finals = [e.text for e in events if isinstance(e, ev.Transcript) and e.final]
    assert finals == ["photosynthesis makes sugar"]


async def test_push_to_talk_drops_the_early_answer_when_the_final_differs():
    stt = HeardSTT("Photosynthesis makes", "photosynthesis makes sugar", delay=0.1)
    llm = TimedLLM()
    events = await _push_to_talk(stt, llm)
    assert [text for text, _ in llm.calls] == [
        "Photosynthesis makes",
        "photosynthesis makes sugar",
    ]
    assert [e.turn_id for e in events if isinstance(e, ev.ResponseDone)] == [1]
    deltas = "".join(e.text for e in events if isinstance(e, ev.ResponseDelta))
    assert deltas == llm.reply  # the dropped answer said nothing

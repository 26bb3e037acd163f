"""The Session's audio pace: audio beyond AUDIO_MAX_SPEED x real time (plus the burst) is
dropped, told to the client once, counted for metrics, and the conversation goes on. And
the Session makes its model work its own (the executor's owner)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pipelines import events as ev
from pipelines.executor import work_owner
from pipelines.outbox import Outbox
from pipelines.session import Session, SessionConfig
from tests.fakes.fixtures import RecordingObserver
from tests.fakes_engine import DictStore, ListSink, ScriptedLLM, ScriptedSTT, ToneTTS

FRAME = bytes(640)  # 20 ms at 16 kHz


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(stt: ScriptedSTT, clock: Callable[[], float], observer: RecordingObserver, **cfg):
    outbox = Outbox(max_events=100000)
    session = Session(
        "pace-1",
        stt=stt,
        llm=ScriptedLLM("Noted."),
        tts=ToneTTS(0.1),
        store=DictStore(),
        captures=ListSink(),
        outbox=outbox,
        config=SessionConfig(mode="push_to_talk", tts=False, **cfg),
        observer=observer,
        clock=clock,
    )
    return session, outbox


def taken(outbox: Outbox) -> list[ev.Event]:
    out = []
    while len(outbox):
        out.append(outbox._items.popleft())
    return out


async def test_a_flood_is_cut_to_the_burst_told_once_and_the_session_goes_on() -> None:
    clock, observer = Clock(), RecordingObserver()
    stt = ScriptedSTT(["first", "second"], interim_every=100000)
    session, outbox = make(stt, clock, observer)
    async with session:
        session.talk_start()
        for _ in range(150 + 250):  # 3 s of burst, then 5 s more at the same instant
            session.feed_audio(FRAME)
        session.feed_audio(bytes(64 * 1024))
        assert stt.streams[0].frames == 150
        clock.now += 1.0  # 1.5 s of audio a second
        for _ in range(100):
            session.feed_audio(FRAME)
        assert stt.streams[0].frames == 150 + 75
        session.talk_end()
        await asyncio.sleep(0.05)
        errors = [e for e in taken(outbox) if isinstance(e, ev.Error)]
        assert [e.code for e in errors] == ["audio_too_fast"]
        assert "1.5x real time" in errors[0].message
        dropped = 250 * 0.02 + 64 * 1024 / 2 / 16000 + 25 * 0.02
        assert abs(observer.dropped_audio - dropped) < 1e-9

        # Still served: the next turn is heard and answered, and not told again.
        clock.now += 10.0
        session.talk_start()
        for _ in range(50):
            session.feed_audio(FRAME)
        session.talk_end()
        await asyncio.sleep(0.05)
        events = taken(outbox)
    assert stt.pushed_frames == [225, 50]
    assert any(isinstance(e, ev.Transcript) and e.final and e.text == "second" for e in events)
    assert not any(isinstance(e, ev.Error) for e in events)


async def test_a_frame_is_cut_to_the_sample() -> None:
    clock, observer = Clock(), RecordingObserver()
    stt = ScriptedSTT([], interim_every=100000)
    session, _ = make(stt, clock, observer, audio_max_speed=1.0, audio_burst_s=0.5)
    async with session:
        session.talk_start()
        session.feed_audio(bytes(2 * 7990))  # 10 samples of the 8000 left
        session.feed_audio(bytes(2 * 30))  # 10 of these are kept: exactly one 20 ms frame
        assert stt.streams[0].frames == 25
        assert abs(observer.dropped_audio - 20 / 16000) < 1e-12


async def test_a_real_time_client_is_never_told() -> None:
    clock, observer = Clock(), RecordingObserver()
    stt = ScriptedSTT([], interim_every=100000)
    session, outbox = make(stt, clock, observer, input_rate=8000)
    async with session:
        session.talk_start()
        for _ in range(60 * 50):  # a minute of 8 kHz phone audio, 20 ms frames
            session.feed_audio(bytes(320))
            clock.now += 0.02
        session.talk_end()
        await asyncio.sleep(0.05)
    assert observer.dropped_audio == 0.0
    assert not any(isinstance(e, ev.Error) for e in taken(outbox))


async def test_restarting_the_stream_does_not_refill_the_burst() -> None:
    clock, observer = Clock(), RecordingObserver()
    stt = ScriptedSTT([], interim_every=100000)
    session, _ = make(stt, clock, observer)
    async with session:
        for _ in range(150):
            session.feed_audio(FRAME)  # the whole burst
        session.configure(SessionConfig(mode="push_to_talk", tts=False, input_rate=8000))
        session.feed_audio(bytes(320))
    assert abs(observer.dropped_audio - 0.02) < 1e-12


async def test_the_sessions_model_work_is_its_own() -> None:
    owners: list[str | None] = []

    class OwnerSTT(ScriptedSTT):
        async def open(self, on_interim):  # type: ignore[no-untyped-def]
            owners.append(work_owner.get())
            return await super().open(on_interim)

    session, _ = make(OwnerSTT([]), Clock(), RecordingObserver())
    async with session:
        owners.append(await asyncio.create_task(_owner()))  # and the tasks it starts
    assert owners == ["pace-1", "pace-1"]
    assert work_owner.get() is None  # left with the session


async def _owner() -> str | None:
    return work_owner.get()

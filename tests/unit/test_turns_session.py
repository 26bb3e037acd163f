"""Turn-taking inside the Session (in-test providers, real VAD on Piper speech): the reply
pauses and resumes for a backchannel, a confirmed barge-in keeps only the acknowledged
audio, and a speculative reply is committed or thrown away."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from pipelines import events as ev
from pipelines.turns import TurnConfig
from tests.fakes_engine import DictStore, ListSink, ScriptedLLM, ToneTTS
from tests.speech import silence, synth
from tests.unit.test_session import drain, make_session


class PauseSTT:
    """A recogniser that transcribes each pause (like Whisper's speculative final): the
    n-th `speculate` reports `pauses[n]` as an interim; `finalize` returns the last one."""

    name = "pause-stt"

    def __init__(self, pauses: list[str], finals: list[str] | None = None) -> None:
        self.pauses = list(pauses)
        self.finals = list(finals or [])
        self.speculated: list[str] = []
        self.hurried: list[float] = []

    async def open(self, on_interim: Callable[[str], None]) -> PauseStream:
        return PauseStream(self, on_interim)


class PauseStream:
    def __init__(self, owner: PauseSTT, on_interim: Callable[[str], None]) -> None:
        self.owner = owner
        self.on_interim = on_interim
        self.last = ""

    def push(self, frame: bytes) -> None:
        pass

    def speculate(self) -> None:
        if self.owner.pauses:
            self.last = self.owner.pauses.pop(0)
            self.owner.speculated.append(self.last)
            self.on_interim(self.last)

    def unspeculate(self) -> None:
        pass

    def hurry(self, interval: float) -> None:
        self.owner.hurried.append(interval)

    async def finalize(self) -> str:
        text = self.owner.finals.pop(0) if self.owner.finals else self.last
        self.last = ""
        return text

    def discard(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def feed(session, pcm: bytes, pace: float = 0.0) -> None:
    """Feed 20 ms frames, yielding to the loop between them (`pace` s of real time each)."""
    for off in range(0, len(pcm), 640):
        session.feed_audio(pcm[off : off + 640])
        await asyncio.sleep(pace)


async def _reply_with_backchannel(turns: TurnConfig) -> tuple[list[tuple[float, ev.Event]], Any]:
    """A three-sentence reply with "Mhm." said over it; every event with its time."""
    store, sink = DictStore(), ListSink()
    llm = ScriptedLLM("One two three four. Five six seven eight. Nine ten eleven twelve.")
    stt = PauseSTT([], finals=["Mhm."])
    session, outbox = make_session(
        stt=stt, llm=llm, voice=ToneTTS(0.5), store=store, sink=sink, audio_lead_s=0.1,
        turns=turns,
    )  # fmt: skip
    got: list[tuple[float, ev.Event]] = []
    loop = asyncio.get_running_loop()
    started, ended = asyncio.Event(), asyncio.Event()

    async def collect():
        while True:
            event = await outbox.get()
            got.append((loop.time(), event))
            if isinstance(event, ev.AudioStart):
                started.set()
            elif isinstance(event, ev.AudioEnd):
                ended.set()

    mhm = synth("Mhm.") + silence(1.0)  # made before: Piper would block the loop meanwhile
    async with session:
        reader = asyncio.create_task(collect())
        session.submit_text("count for me")
        await asyncio.wait_for(started.wait(), 5)
        await feed(session, mhm, pace=0.02)
        await asyncio.wait_for(ended.wait(), 10)
        await asyncio.sleep(0.3)  # the last 0.1 s of audio plays (then it is recorded)
        reader.cancel()
    events = [e for _, e in got]
    assert not any(isinstance(e, ev.Interrupted) for e in events)
    audio = [e for e in events if isinstance(e, ev.AudioFrame)]
    assert len(audio) == 15  # three 0.5 s sentences in 100 ms chunks: nothing lost
    finals = [e for e in events if isinstance(e, ev.Transcript) and e.final]
    assert [f.text for f in finals] == ["count for me", "Mhm."]
    assert len(llm.calls) == 1  # the backchannel was not answered
    assert store.data["s1"][0].agent == llm.reply
    assert sink.captures[0].metadata["interrupted"] is False
    return got, session


def _gaps(got: list[tuple[float, ev.Event]]) -> list[float]:
    audio_t = [t for t, e in got if isinstance(e, ev.AudioFrame)]
    return [b - a for a, b in itertools.pairwise(audio_t)]


async def test_a_backchannel_ducks_the_reply_without_stopping_it():
    got, _ = await _reply_with_backchannel(TurnConfig(barge_in_pause_ms=5000))
    yields = [e for _, e in got if isinstance(e, ev.Duck | ev.Pause | ev.Resume)]
    assert [type(e) for e in yields] == [ev.Duck, ev.Resume]
    assert yields[0].gain_db == -24.0
    assert max(_gaps(got)) < 0.2, "the reply stopped for a backchannel"
    times = {type(e): t for t, e in got if isinstance(e, ev.Duck | ev.Resume)}
    # Back to full volume soon after the "mhm" ends, not after the turn is judged.
    assert times[ev.Resume] - times[ev.Duck] < 1.2


async def test_a_longer_candidate_pauses_the_reply_and_it_resumes_whole():
    got, _ = await _reply_with_backchannel(TurnConfig(barge_in_pause_ms=300))
    yields = [e for _, e in got if isinstance(e, ev.Duck | ev.Pause | ev.Resume)]
    assert [type(e) for e in yields] == [ev.Duck, ev.Pause, ev.Resume]
    assert max(_gaps(got)) > 0.4, "the reply never paused while the caller spoke"
    pause, resume = yields[1], yields[2]
    assert isinstance(pause, ev.Pause) and isinstance(resume, ev.Resume)
    assert pause.turn_id == resume.turn_id
    assert resume.position_ms == pause.position_ms  # nothing counted as heard meanwhile


async def test_confirmed_barge_in_remembers_only_the_acknowledged_audio():
    store = DictStore()
    llm = ScriptedLLM("One two three four. Five six seven eight. Nine ten eleven twelve.")
    said = "Hold on, tell me about the moon."
    stt = PauseSTT([said], finals=[said])
    session, outbox = make_session(
        stt=stt, llm=llm, store=store, audio_lead_s=0.3, playback_acks=True, tts=True
    )
    async with session:
        session.submit_text("count for me")
        events = await drain(outbox, ev.AudioStart)
        await asyncio.sleep(1.2)  # > 1 s released and "played" by the clock...
        session.playback_acked(events[-1].turn_id, 0.5)  # ...but the caller confirmed 0.5 s
        await feed(session, synth("Hold on, tell me about the moon landing please."), 0.005)
        events += await drain(outbox, ev.Interrupted)
        await feed(session, silence(1.0))
        events += await drain(outbox, ev.ResponseDone)
    heard = store.data["s1"][0]
    assert heard.agent == "One two", heard.agent  # 0.5 s of a 1 s, four-word sentence
    assert llm.calls[1][0] == "Hold on, tell me about the moon."


async def test_speculative_reply_is_released_when_the_turn_ends_as_transcribed():
    llm = ScriptedLLM("Sugar from light.")
    stt = PauseSTT(["Photosynthesis makes sugar."])
    session, outbox = make_session(stt=stt, llm=llm, voice=ToneTTS(0.2), audio_lead_s=10.0)
    async with session:
        await feed(session, synth("Photosynthesis makes sugar.") + silence(0.8), pace=0.005)
        events = await drain(outbox, ev.AudioEnd)
    kinds = [e.type for e in events]
    final = next(i for i, e in enumerate(events) if isinstance(e, ev.Transcript) and e.final)
    # The reply was generated during the pause but shown only after the final transcript.
    assert kinds.index("response_delta") > final
    assert [c[0] for c in llm.calls] == ["Photosynthesis makes sugar."]
    done = next(e for e in events if isinstance(e, ev.ResponseDone))
    assert done.text == "Sugar from light."
    assert session.last_turn_stages["llm_first_token"] >= 0


async def test_speculative_reply_is_thrown_away_when_the_caller_goes_on():
    llm = ScriptedLLM("Tell me more.", gap=0.01)
    stt = PauseSTT(
        ["I was reading about black holes and", "I was reading about black holes and stars."]
    )
    cfg = TurnConfig(unfinished_silence_ms=900)
    session, outbox = make_session(
        stt=stt, llm=llm, voice=ToneTTS(0.2), audio_lead_s=10.0, turns=cfg
    )
    async with session:
        part1 = synth("I was reading about black holes and")
        part2 = synth("stars.")
        await feed(session, part1 + silence(0.6) + part2 + silence(1.0), pace=0.005)
        events = await drain(outbox, ev.AudioEnd)
    finals = [e.text for e in events if isinstance(e, ev.Transcript) and e.final]
    assert finals == ["I was reading about black holes and stars."]  # one turn, not two
    assert llm.calls[0][0] == "I was reading about black holes and"  # speculated...
    assert llm.calls[-1][0] == "I was reading about black holes and stars."
    dones = [e for e in events if isinstance(e, ev.ResponseDone)]
    assert len(dones) == 1  # ...but only the real turn's reply was shown and spoken
    starts = [e for e in events if isinstance(e, ev.AudioStart)]
    assert len(starts) == 1


class StreamingMemberSTT(PauseSTT):
    """A chain whose recogniser in use streams its interims (Deepgram in front of Whisper):
    it has `speculate` (nothing to give) but does not transcribe pauses. It hears `text`
    after 20 frames."""

    name = "streaming-chain"

    def __init__(self, text: str, llm: ScriptedLLM) -> None:
        super().__init__([], [text])
        self.text = text
        self.llm = llm
        #: Model requests already made when the final transcript was asked for.
        self.calls_at_final: list[int] = []
        #: Frames of the utterance heard when the model was first asked, and in all.
        self.frames_at_call: int | None = None
        self.frames_at_final: int | None = None

    async def open(self, on_interim: Callable[[str], None]) -> StreamingMemberStream:
        return StreamingMemberStream(self, on_interim)


class StreamingMemberStream(PauseStream):
    owner: StreamingMemberSTT
    transcribes_pauses = False

    def __init__(self, owner: StreamingMemberSTT, on_interim: Callable[[str], None]) -> None:
        super().__init__(owner, on_interim)
        self.frames = 0

    def push(self, frame: bytes) -> None:
        self.frames += 1
        if self.frames == 20:
            self.on_interim(self.owner.text)
        if self.owner.frames_at_call is None and self.owner.llm.calls:
            self.owner.frames_at_call = self.frames

    async def finalize(self) -> str:
        self.owner.calls_at_final.append(len(self.owner.llm.calls))
        self.owner.frames_at_final = self.frames
        self.frames = 0
        return await super().finalize()


async def test_a_streaming_recognisers_latest_interim_is_answered_when_the_pause_begins():
    # Its interims are not transcripts of the pause: the held reply starts as the pause
    # begins, not at the next interim, and the turn ends on the words' rule (a finished
    # sentence), not after waiting for a pause transcript that never comes.
    llm = ScriptedLLM("Sugar from light.")
    stt = StreamingMemberSTT("Photosynthesis makes sugar.", llm)
    session, outbox = make_session(stt=stt, llm=llm, voice=ToneTTS(0.2), audio_lead_s=10.0)
    async with session:
        await feed(session, synth("Photosynthesis makes sugar.") + silence(0.8), pace=0.005)
        events = await drain(outbox, ev.AudioEnd)
    assert [c[0] for c in llm.calls] == ["Photosynthesis makes sugar."]
    assert stt.calls_at_final == [1]  # asked before the final transcript...
    # ...as the pause reached 200 ms, not when the turn ended at 350 ms (7 frames later).
    assert stt.frames_at_call is not None and stt.frames_at_final is not None
    assert stt.frames_at_final - stt.frames_at_call >= 5
    done = next(e for e in events if isinstance(e, ev.ResponseDone))
    assert done.text == "Sugar from light."


def _attenuate(pcm: bytes, db: float) -> bytes:
    import numpy as np

    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64) * 10 ** (db / 20)
    return np.rint(x).astype("<i2").tobytes()


async def test_echo_of_the_agent_on_a_phone_line_does_not_barge_in():
    from audio.pcm import rms_dbfs

    voice = synth("One two three four, five six seven eight.")
    echo = _attenuate(voice, -35.0)
    assert rms_dbfs(echo) < -45.0 < rms_dbfs(voice)
    for pcm, expect_cut in ((echo, False), (voice, True)):
        store = DictStore()
        llm = ScriptedLLM("One two three four. Five six seven eight. Nine ten eleven twelve.")
        stt = PauseSTT([], finals=["one two three four five six seven eight"])
        session, outbox = make_session(
            stt=stt, llm=llm, store=store, audio_lead_s=0.1, echo_guard=True
        )
        async with session:
            session.submit_text("count for me")
            await drain(outbox, ev.AudioStart)
            await feed(session, pcm + silence(0.8), pace=0.01)
            events = await drain(outbox, ev.AudioEnd if not expect_cut else ev.Interrupted)
            await asyncio.sleep(0.3)  # the last 0.1 s plays out (then it is recorded)
        assert any(isinstance(e, ev.Interrupted) for e in events) is expect_cut
        if not expect_cut:
            assert store.data["s1"][0].agent == llm.reply  # heard whole, not cut by its echo


async def test_a_failed_reply_leaves_nothing_to_yield():
    """A reply whose model failed is over: the caller's next words are a new turn, not a
    barge-in (no duck, no pause), and they are answered."""

    class BrokenLLM(ScriptedLLM):
        async def stream(self, user_text, history):
            if user_text == "boom":
                raise RuntimeError("model exploded")
            async for d in super().stream(user_text, history):
                yield d

    stt = PauseSTT(["Hello there."])
    session, outbox = make_session(stt=stt, llm=BrokenLLM("Hi."), voice=ToneTTS(0.2))
    hello = synth("Hello there.") + silence(1.0)
    async with session:
        session.submit_text("boom")
        events = await drain(outbox, ev.Error)
        await feed(session, hello, pace=0.002)
        events += await drain(outbox, ev.ResponseDone)
    assert not [e for e in events if isinstance(e, ev.Duck | ev.Pause | ev.Resume)]
    assert events[-1].text == "Hi."


async def test_speech_over_the_agent_is_transcribed_quickly_and_not_as_a_pause():
    """While it may be a barge-in, the caller's speech is transcribed on the short cadence,
    and its pauses are not final-transcribed for a speculative reply (that would stop the
    quick transcripts that decide it)."""
    stt = PauseSTT(["never asked"], finals=["Mhm."])
    llm = ScriptedLLM("One two three four. Five six seven eight. Nine ten eleven twelve.")
    session, outbox = make_session(stt=stt, llm=llm, voice=ToneTTS(0.5), audio_lead_s=0.1)
    mhm = synth("Mhm.") + silence(1.0)
    async with session:
        session.submit_text("count for me")
        await drain(outbox, ev.AudioStart)
        await feed(session, mhm, pace=0.02)
        await drain(outbox, ev.AudioEnd)
    assert stt.hurried == [0.2]
    assert stt.speculated == []
    assert len(llm.calls) == 1


async def test_a_reply_that_ends_under_the_callers_voice_is_remembered_up_to_the_duck():
    """The reply's last audio went out ducked while the caller spoke; the caller was
    interrupting: the exchange is recorded as interrupted, heard up to the duck, not as a
    whole reply heard."""
    store, sink = DictStore(), ListSink()
    llm = ScriptedLLM("One two three four. Five six seven eight.")
    said = "Hold on, tell me about the moon."
    stt = PauseSTT([said], finals=[said])
    session, outbox = make_session(
        stt=stt, llm=llm, voice=ToneTTS(0.5), store=store, sink=sink, audio_lead_s=0.3
    )
    talk = synth(said) + silence(1.0)
    async with session:
        session.submit_text("count for me")
        events = await drain(outbox, ev.AudioStart)
        await asyncio.sleep(0.2)
        await feed(session, talk, pace=0.02)
        events += await drain(outbox, ev.AudioEnd)  # all its audio went out, ducked...
        events += await drain(outbox, ev.Interrupted)  # ...and it is cut under their voice
        events += await drain(outbox, ev.ResponseDone)  # and the interruption is answered
        for _ in range(50):
            if len(sink.captures) >= 1:
                break
            await asyncio.sleep(0.05)
    kinds = [type(e) for e in events]
    assert ev.Duck in kinds and kinds.index(ev.Duck) < kinds.index(ev.Interrupted)
    first = sink.captures[0]
    assert first.metadata["interrupted"] is True
    heard = store.data["s1"][0].agent.split()
    assert len(heard) < 4 and llm.reply.split()[: len(heard)] == heard
    assert llm.calls[1][0] == said


async def test_a_protocol_1_listener_is_not_ducked_and_the_reply_pauses_as_before():
    """A WebSocket client that did not say `revision: 1` ignores duck/pause/resume: the
    server pauses the reply after BARGE_IN_MIN_SPEECH_MS of speech over it, as in
    protocol 1, and never ducks it."""
    stt = PauseSTT([], finals=["Mhm."])
    llm = ScriptedLLM("One two three four. Five six seven eight. Nine ten eleven twelve.")
    session, outbox = make_session(
        stt=stt, llm=llm, voice=ToneTTS(0.5), audio_lead_s=0.1, listener_yields=False
    )
    mhm = synth("Mhm.") + silence(1.0)
    async with session:
        session.submit_text("count for me")
        events = await drain(outbox, ev.AudioStart)
        await feed(session, mhm, pace=0.02)
        events += await drain(outbox, ev.AudioEnd)
    yields = [type(e) for e in events if isinstance(e, ev.Duck | ev.Pause | ev.Resume)]
    assert yields == [ev.Pause, ev.Resume]
    assert sum(isinstance(e, ev.AudioFrame) for e in events) == 15  # nothing lost


async def test_a_text_only_reply_that_ends_while_the_caller_talks_is_recorded_at_once():
    """Without audio there is nothing ducked to wait for: the reply is recorded when done."""
    store = DictStore()
    stt = PauseSTT([], finals=["Mhm."])
    llm = ScriptedLLM("One two three four five six.", gap=0.05)
    session, outbox = make_session(stt=stt, llm=llm, store=store, tts=False)
    mhm = synth("Mhm.") + silence(1.0)
    async with session:
        session.submit_text("count for me")
        await drain(outbox, ev.ResponseDelta)
        feeding = asyncio.create_task(feed(session, mhm, pace=0.02))
        await drain(outbox, ev.ResponseDone)
        await asyncio.sleep(0.2)
        assert store.data["s1"][0].agent == llm.reply  # before the "mhm" is even judged
        await feeding

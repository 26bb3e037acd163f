"""One conversation: endpointer -> STT -> LLM -> TTS, with barge-in.

The transport feeds audio and control input in; the Session puts typed events
(`pipelines.events`) into its `Outbox`. It moves the caller's audio and carries out what
its parts decide: `Floor` judges the caller's speech (turn-taking), `PauseTranscripts`
asks the recogniser for early transcripts of pauses, `Replies` produces and stops the
agent's replies, `TurnRecords` remembers each exchange, and `TaskScope` owns every task,
so leaving `async with session:` cancels them all (after recording an unfinished reply as
far as it was heard).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterable

from audio.framing import Reframer
from audio.pace import AudioPace
from audio.resample import StreamResampler
from audio.vad import Endpointer, VadEvent
from pipelines import events as ev
from pipelines.executor import work_owner
from pipelines.floor import Floor
from pipelines.outbox import Outbox
from pipelines.pause_transcripts import PauseTranscripts
from pipelines.ports import CaptureSink, NullObserver, SessionObserver, SessionStore
from pipelines.providers import (
    STT_SAMPLE_RATE,
    LanguageModel,
    SpeechToText,
    STTStream,
    TextToSpeech,
)
from pipelines.replies import Replies
from pipelines.session_config import MODES, SessionConfig, SessionInputError
from pipelines.tasks import TaskScope
from pipelines.turn_records import TurnRecords
from pipelines.turns import Act, Utterance

__all__ = ["MODES", "Session", "SessionConfig", "SessionInputError"]

log = logging.getLogger(__name__)


class Session:
    def __init__(
        self,
        session_id: str,
        *,
        stt: SpeechToText,
        llm: LanguageModel,
        tts: TextToSpeech,
        store: SessionStore,
        captures: CaptureSink,
        outbox: Outbox,
        config: SessionConfig | None = None,
        observer: SessionObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        learner_id: str = "",
    ) -> None:
        self.id = session_id
        self.outbox = outbox
        self.config = config or SessionConfig()
        self._stt = stt
        self._llm = llm
        self._store = store
        self._clock = clock
        self._observer = observer or NullObserver()
        self._tasks = TaskScope(session_id, outbox)
        self._records = TurnRecords(
            session_id,
            store,
            captures,
            self._observer,
            learner_id,
            clock=clock,
            providers={"stt": stt.name, "llm": llm.name, "tts": tts.name},
        )
        self._floor = Floor()
        self._replies = Replies(
            session_id,
            llm=llm,
            tts=tts,
            store=store,
            outbox=outbox,
            records=self._records,
            config=self.config,
            spawn=self._tasks.spawn,
            on_said=self._floor.agent_said,
            clock=clock,
        )
        self._exit: contextlib.AsyncExitStack | None = None
        self._stream: STTStream | None = None
        self._turn_id = 0
        self._listening = False
        self._utterance_frames = 0
        #: Clock time the caller began the utterance being listened to (for its trace).
        self._speech_start = 0.0
        #: The latest interim transcript of the utterance being listened to.
        self._interim = ""
        cfg = self.config
        self._pace = AudioPace(cfg.input_rate, cfg.audio_max_speed, cfg.audio_burst_s, clock())
        self._told_too_fast = False
        #: The last frame fed had audio dropped for arriving too fast (the transport may
        #: read the connection more slowly while it does).
        self.dropping_audio = False
        self._owner_token: contextvars.Token[str | None] | None = None
        self._apply_config()

    @property
    def last_barge_in(self) -> float:
        """Clock time of the last barge-in (the transport measures its reaction from it)."""
        return self._replies.last_barge_in

    @property
    def turns(self) -> int:
        """Exchanges recorded so far."""
        return self._records.count

    @property
    def last_turn_stages(self) -> dict[str, float]:
        return self._records.last_stages

    @property
    def learner_id(self) -> str:
        """Whose conversation this is; every capture it writes carries it."""
        return self._records.learner_id

    # ----------------------------------------------------------------- life cycle
    async def __aenter__(self) -> Session:
        # Model work started from here on (this task, and the tasks it starts) is this
        # session's: it takes its turn with other sessions' (pipelines/executor.py).
        self._owner_token = work_owner.set(self.id)
        async with contextlib.AsyncExitStack() as stack:
            self._stream = stream = await self._stt.open(self._on_interim)
            stack.push_async_callback(stream.aclose)
            self._apply_config()  # the turn rules depend on what the recogniser can do
            await stack.enter_async_context(self._tasks.open())
            stack.push_async_callback(self._replies.close)
            self._tasks.spawn(self._keepalive())
            self._exit = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Record an unfinished reply, cancel every task and wait for them, then close the
        recogniser stream. The body's exception (if any) is the transport's: it goes on."""
        assert self._exit is not None, "the session was not entered"
        exit_stack, self._exit = self._exit, None
        try:
            await exit_stack.aclose()
        finally:
            token, self._owner_token = self._owner_token, None
            if token is not None:
                with contextlib.suppress(ValueError):  # left in another context
                    work_owner.reset(token)

    def configure(self, config: SessionConfig) -> None:
        if config.mode not in MODES:
            raise SessionInputError("invalid_message", f"mode must be one of {MODES}")
        self._replies.interrupt()
        if self._stream is not None:
            self._stream.discard()
        self._listening = False
        self.config = config
        self._apply_config()

    def _apply_config(self) -> None:
        cfg = self.config
        rate = cfg.input_rate
        pace = self._pace
        if (pace.max_speed, pace.burst_s) != (cfg.audio_max_speed, cfg.audio_burst_s):
            self._pace = AudioPace(rate, cfg.audio_max_speed, cfg.audio_burst_s, self._clock())
        elif pace.rate != rate:
            pace.set_rate(rate, self._clock())  # what is left of the slack carries over
        self._resampler = (
            StreamResampler(rate, STT_SAMPLE_RATE) if rate != STT_SAMPLE_RATE else None
        )
        self._frame_s = cfg.endpointer.frame_ms / 1000
        self._reframer = Reframer(STT_SAMPLE_RATE, cfg.endpointer.frame_ms)
        self._endpointer = Endpointer(cfg.endpointer)
        self._audio_t = 0.0
        self._max_frames = cfg.endpointer.max_utterance_ms // cfg.endpointer.frame_ms
        self._continuous = cfg.mode == "continuous"
        self._echo_guard = cfg.echo_guard
        self._echo_mode = False
        self._pauses = PauseTranscripts(self._stream, cfg.speculate_after_ms)
        turns = cfg.turn_rules(transcript_on_pause=self._pauses.supported)
        self._floor.configure(turns)
        if self._continuous:
            # The floor ends turns; the endpointer's own end is only the backstop.
            self._endpointer.end_silence_ms = turns.longest_silence_ms + cfg.endpointer.frame_ms
        self._replies.config = cfg

    # ------------------------------------------------------------------ audio in
    def feed_audio(self, data: bytes) -> None:
        """Hot path: called for every binary frame the client sends."""
        samples = len(data) >> 1
        admitted = self._pace.admit(samples, self._clock())
        self.dropping_audio = admitted < samples
        if admitted < samples:
            self._too_fast(samples - admitted)
            if not admitted:
                return
            data = data[: admitted * 2]
        if self._resampler is not None:
            data = self._resampler.process(data)
        if self._echo_guard:
            self._guard_echo()
        stream = self._stream
        assert stream is not None
        for frame in self._reframer.push(data):
            self._audio_t += self._frame_s
            event = self._endpointer.process(frame, self._audio_t)
            if self._continuous:
                if event is VadEvent.SPEECH:
                    if self._listening:
                        stream.push(frame)
                        self._speech_frame(frame)
                elif event is VadEvent.START:
                    self._speech_started()
                elif event is VadEvent.END:
                    self._floor.speech_ended()
                    self._speech_ended(self._endpointer.end_silence_ms)
            else:
                if self._listening:
                    stream.push(frame)
                    self._utterance_frames += 1
                    if self._utterance_frames >= self._max_frames:
                        self._end_utterance(0.0)
                if event is VadEvent.START:
                    self.outbox.emit(ev.Vad(True))
                elif event is VadEvent.END:
                    self.outbox.emit(ev.Vad(False))

    def _too_fast(self, samples: int) -> None:
        """Audio beyond AUDIO_MAX_SPEED x real time (plus the burst) is dropped: counted
        every time, told to the client and logged once per session."""
        self._observer.audio_dropped(samples / self.config.input_rate)
        if not self._told_too_fast:
            self._told_too_fast = True
            cfg = self.config
            log.warning(
                "audio faster than real time: the excess is dropped",
                extra={"session_id": self.id, "max_speed": cfg.audio_max_speed},
            )
            self.outbox.emit(
                ev.Error(
                    "audio_too_fast",
                    f"audio arrives faster than {cfg.audio_max_speed:g}x real time; "
                    "the excess is dropped",
                )
            )

    def _speech_frame(self, frame: bytes) -> None:
        """One frame of the caller's utterance (continuous mode): the floor judges it, and a
        pause long enough is transcribed early (for a speculative reply)."""
        silence = self._endpointer.detector.trailing_silence_ms
        acts = self._floor.frame(frame, silence)
        if acts:
            self._act(acts)
            if not self._listening:
                return  # the turn ended
        if not self._floor.judging_barge_in:
            # (A pause transcript would stop the candidate's quick interims, which decide it.)
            self._pauses.frame(silence)

    def _guard_echo(self) -> None:
        """While the agent's audio plays, a stricter VAD and the floor's echo gate keep its
        echo from starting or interrupting turns."""
        audible = self._clock() < self._replies.audible_until
        if audible != self._echo_mode:
            self._echo_mode = audible
            cfg = self.config
            self._endpointer.set_aggressiveness(
                cfg.echo_vad_aggressiveness if audible else cfg.endpointer.aggressiveness
            )
            self._floor.gate_echo(cfg.echo_gate_dbfs if audible else None)

    # -------------------------------------------------------------- push-to-talk
    def talk_start(self) -> None:
        if self._continuous:
            raise SessionInputError("invalid_message", "talk_start needs mode push_to_talk")
        self._replies.interrupt()
        assert self._stream is not None
        self._stream.discard()
        # A partial frame left from before the press is not this turn's audio.
        self._reframer.reset()
        self._turn_id += 1
        self._listening = True
        self._interim = ""
        self._utterance_frames = 0
        self._speech_start = self._clock()

    def talk_end(self) -> None:
        if self._continuous:
            raise SessionInputError("invalid_message", "talk_end needs mode push_to_talk")
        if self._listening:
            self._flush_turn_audio()
            if self._pauses.streaming:
                # A streaming recogniser's final is a round trip away: its latest interim
                # may start the reply now, released if the final says the same words.
                self._act(self._floor.released(self._interim))
            self._end_utterance(0.0)

    def _flush_turn_audio(self) -> None:
        """On release, the turn's last samples (the resampler's filter tail and the partial
        frame under 20 ms) go to this turn's recogniser, padded with silence, and leave
        nothing behind that the next turn would start with."""
        if self._resampler is not None:
            for frame in self._reframer.push(self._resampler.flush()):
                self._push_turn_frame(frame)
        tail = self._reframer.flush()
        if tail is not None:
            self._push_turn_frame(tail)

    def _push_turn_frame(self, frame: bytes) -> None:
        if self._listening and self._utterance_frames < self._max_frames:
            assert self._stream is not None
            self._stream.push(frame)
            self._utterance_frames += 1

    # ------------------------------------------------------- text, control, end
    def submit_text(self, text: str) -> None:
        text = text.strip()
        if not text:
            raise SessionInputError("invalid_message", "text must not be empty")
        self._replies.interrupt()
        self._turn_id += 1
        self.outbox.emit(ev.Transcript(self._turn_id, text, True))
        now = self._clock()
        self._replies.start(self._turn_id, text, {"speech_end": now, "stt_final": now})

    def interrupt(self) -> None:
        self._replies.interrupt()

    def playback_acked(self, turn_id: int, seconds: float) -> None:
        """The listener's player reports `seconds` of reply `turn_id` played (Twilio mark)."""
        self._replies.playback_acked(turn_id, seconds)

    async def end(self) -> str:
        """Stop replying and return what the conversation covered (the transport sends
        it as the last message before closing)."""
        self._replies.interrupt()
        await asyncio.sleep(0)  # let the interrupted reply record what was heard
        history = await self._store.get_context(self.id)
        return self._llm.recap(history)

    # --------------------------------------------------------------- turn-taking
    def _speech_started(self) -> None:
        self.outbox.emit(ev.Vad(True))
        now = self._clock()
        start_ms = self.config.endpointer.start_ms
        # The VAD says "speech" once it has heard `start_ms` of it.
        self._speech_start = now - start_ms / 1000
        busy = self._replies.busy(now)
        # A chain may have fallen back from Whisper to a streaming recogniser or back
        # (None: no member open yet, the rules' default holds).
        pause_transcripts = self._pauses.transcribed_now
        self._act(self._floor.speech_started(busy, start_ms, pause_transcripts=pause_transcripts))
        self._turn_id += 1
        self._listening = True
        self._interim = ""
        self._pauses.reset()
        assert self._stream is not None
        if busy and self.config.barge_in_interim_s > 0:
            # It may be an interruption: its first words decide it, so hear them early.
            self._pauses.hurry(self.config.barge_in_interim_s)
        for frame in self._endpointer.take_preroll():
            self._stream.push(frame)

    def _speech_ended(self, silence_ms: float) -> None:
        self.outbox.emit(ev.Vad(False))
        if self._listening:
            self._end_utterance(silence_ms / 1000)

    def _end_utterance(self, trailing_silence_s: float) -> None:
        self._listening = False
        self._pauses.reset()
        now = self._clock()
        marks = {
            "speech_start": self._speech_start,
            "speech_end": now - trailing_silence_s,
            "endpoint": now,
        }
        utt = self._floor.utterance_ended()
        self._tasks.spawn(self._finish_turn(self._turn_id, marks, utt))

    def _on_interim(self, text: str) -> None:
        if self._listening:
            self._interim = text
            self.outbox.emit(ev.Transcript(self._turn_id, text, False))
            acts = self._floor.interim(text)
            if acts:
                self._act(acts)

    async def _finish_turn(
        self, turn_id: int, marks: dict[str, float], utt: Utterance | None
    ) -> None:
        """`marks`: when the caller started and stopped speaking and the turn was ended."""
        assert self._stream is not None
        try:
            text = (await self._stream.finalize()).strip()
        except Exception:
            self._act(self._floor.abandoned(utt))  # a reply it held back plays on
            raise
        marks["stt_final"] = self._clock()
        # A newer turn began (the caller spoke or pressed again): answer both together.
        went_on = self._listening or turn_id != self._turn_id
        verdict = self._floor.final(utt, text, caller_went_on=went_on)
        self.outbox.emit(ev.Transcript(turn_id, verdict.shown, True))
        if verdict.commit and self._replies.commit(turn_id, verdict.answer, marks):
            return
        acts = verdict.acts
        if self._floor.judging_barge_in:
            # The caller is already talking over the reply again: that utterance decides
            # whether it plays on, not this one's verdict.
            acts = tuple(a for a in acts if a is not Act.RESUME_REPLY)
        self._act(acts)
        if verdict.answer:
            self._replies.start(turn_id, verdict.answer, marks)

    def _act(self, acts: Iterable[Act]) -> None:
        """Carry out what the floor decided."""
        replies = self._replies
        for act in acts:
            if act is Act.DUCK_REPLY:
                replies.duck()
            elif act is Act.PAUSE_REPLY:
                replies.pause()
            elif act is Act.RESUME_REPLY:
                replies.resume()
            elif act is Act.INTERRUPT:
                replies.interrupt()
            elif act is Act.END_TURN:
                silence = self._endpointer.detector.trailing_silence_ms
                self._endpointer.force_end()
                self._speech_ended(silence)
            elif act is Act.SPECULATE:
                text = self._floor.speculated
                if text:
                    replies.hold(self._turn_id, text)
            elif act is Act.DROP_SPECULATION:
                replies.drop_held()

    # -------------------------------------------------------------------- plumbing
    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.config.keepalive_s)
            with contextlib.suppress(Exception):
                await self._store.touch(self.id)

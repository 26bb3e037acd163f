"""One conversation: endpointer -> STT -> LLM -> TTS, with barge-in.

The transport feeds audio and control input in; the Session puts typed events
(`pipelines.events`) into its `Outbox`. Every task of the conversation belongs to the
Session's `TaskScope`, so leaving `async with session:` cancels all of them (after
recording an unfinished reply as far as it was heard).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from audio.framing import Reframer
from audio.resample import StreamResampler
from audio.vad import Endpointer, VadEvent
from pipelines import events as ev
from pipelines.chunker import SentenceChunker
from pipelines.conversation import record_exchange
from pipelines.outbox import Outbox
from pipelines.playout import Playout
from pipelines.ports import Capture, CaptureSink, NullObserver, SessionObserver
from pipelines.ports import SessionStore as SessionStoreProto
from pipelines.providers import (
    STT_SAMPLE_RATE,
    LanguageModel,
    SpeechToText,
    STTStream,
    TextToSpeech,
)
from pipelines.session_config import MODES, SessionConfig, SessionInputError
from pipelines.session_turns import TurnTaking
from pipelines.tasks import TaskScope
from pipelines.turns import TurnTaker, Utterance

log = logging.getLogger(__name__)

__all__ = ["MODES", "Session", "SessionConfig", "SessionInputError"]


@dataclass(slots=True)
class _Reply:
    turn_id: int
    user_text: str
    task: asyncio.Task[None] | None = None
    playout: Playout = field(default_factory=Playout)
    text: str = ""
    audio_started: bool = False
    #: Set while the reply's audio may be released (cleared: held or paused).
    go: asyncio.Event = field(default_factory=asyncio.Event)
    #: A speculative reply is generated but shows and says nothing until committed.
    committed: bool = True
    commit: asyncio.Event = field(default_factory=asyncio.Event)
    marks: dict[str, float] = field(default_factory=dict)


class Session(TurnTaking):
    def __init__(
        self,
        session_id: str,
        *,
        stt: SpeechToText,
        llm: LanguageModel,
        tts: TextToSpeech,
        store: SessionStoreProto,
        captures: CaptureSink,
        outbox: Outbox,
        config: SessionConfig | None = None,
        observer: SessionObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = session_id
        self.outbox = outbox
        self._stt = stt
        self._llm = llm
        self._tts = tts
        self._store = store
        self._captures = captures
        self._observer = observer or NullObserver()
        self._clock = clock
        self._tasks = TaskScope(session_id, outbox)
        self._exit: contextlib.AsyncExitStack | None = None
        self._stream: STTStream | None = None
        self.config = config or SessionConfig()
        self._apply_config()
        self._turn_id = 0
        self._listening = False
        self._speculating = False
        self._utterance_frames = 0
        self._carry = ""
        self._reply: _Reply | None = None
        self._spec: _Reply | None = None
        self._utt: Utterance | None = None
        self._audible_until = 0.0
        self._echo_mode = False
        #: Clock time of the last barge-in (the transport measures its reaction from it).
        self.last_barge_in = 0.0
        self._finals: asyncio.Task[Any] | None = None
        self.turns = 0

    # ----------------------------------------------------------------- life cycle
    async def __aenter__(self) -> Session:
        async with contextlib.AsyncExitStack() as stack:
            self._stream = stream = await self._stt.open(self._on_interim)
            stack.push_async_callback(stream.aclose)
            self._turns.config.transcript_on_pause = hasattr(stream, "speculate")
            await stack.enter_async_context(self._tasks.open())
            stack.push_async_callback(self._record_unfinished_reply)
            self._tasks.spawn(self._keepalive())
            self._exit = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Record an unfinished reply, cancel every task and wait for them, then close the
        recogniser stream. The body's exception (if any) is the transport's: it goes on."""
        assert self._exit is not None, "the session was not entered"
        exit_stack, self._exit = self._exit, None
        await exit_stack.aclose()

    async def _record_unfinished_reply(self) -> None:
        """A disconnect or shutdown mid-reply still captures the exchange (what was heard),
        as a barge-in would; otherwise it would be lost with the cancelled reply task."""
        reply, self._reply = self._reply, None
        if reply is None or reply.task is None or reply.task.done():
            return
        reply.task.cancel()
        heard = reply.playout.heard_text(self._clock()) if self.config.tts else reply.text
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self._record(reply.turn_id, reply.user_text, heard, interrupted=True)

    def configure(self, config: SessionConfig) -> None:
        if config.mode not in MODES:
            raise SessionInputError("invalid_message", f"mode must be one of {MODES}")
        self._barge_in()
        if self._stream is not None:
            self._stream.discard()
        self._listening = False
        self.config = config
        self._apply_config()

    def _apply_config(self) -> None:
        cfg = self.config
        rate = cfg.input_rate
        self._resampler = (
            StreamResampler(rate, STT_SAMPLE_RATE) if rate != STT_SAMPLE_RATE else None
        )
        self._frame_s = cfg.endpointer.frame_ms / 1000
        self._reframer = Reframer(STT_SAMPLE_RATE, cfg.endpointer.frame_ms)
        self._endpointer = Endpointer(cfg.endpointer)
        self._audio_t = 0.0
        self._max_frames = cfg.endpointer.max_utterance_ms // cfg.endpointer.frame_ms
        self._continuous = cfg.mode == "continuous"
        turns = cfg.turn_rules(transcript_on_pause=hasattr(self._stream, "speculate"))
        self._turns = TurnTaker(turns)
        if self._continuous:
            # The turn-taker ends turns; the endpointer's own end is only the backstop.
            self._endpointer.end_silence_ms = turns.longest_silence_ms + cfg.endpointer.frame_ms
        self._echo_mode = False

    # ------------------------------------------------------------------ audio in
    def feed_audio(self, data: bytes) -> None:
        """Hot path: called for every binary frame the client sends."""
        if self._resampler is not None:
            data = self._resampler.process(data)
        if self.config.echo_guard:
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
                        self._turn_frame(frame)
                        self._speculate()
                elif event is VadEvent.START:
                    self._speech_started()
                elif event is VadEvent.END:
                    if self._utt is not None:
                        self._turns.ended(self._utt)
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

    def _speculate(self) -> None:
        speculate = getattr(self._stream, "speculate", None)
        if speculate is None:
            return
        silence = self._endpointer.detector.trailing_silence_ms
        if silence >= self.config.speculate_after_ms:
            if not self._speculating:
                self._speculating = True
                speculate()
        elif self._speculating and silence == 0:
            self._speculating = False
            self._stream.unspeculate()  # type: ignore[union-attr]

    # -------------------------------------------------------------- push-to-talk
    def talk_start(self) -> None:
        if self._continuous:
            raise SessionInputError("invalid_message", "talk_start needs mode push_to_talk")
        self._barge_in()
        assert self._stream is not None
        self._stream.discard()
        self._turn_id += 1
        self._listening = True
        self._utterance_frames = 0

    def talk_end(self) -> None:
        if self._continuous:
            raise SessionInputError("invalid_message", "talk_end needs mode push_to_talk")
        if self._listening:
            self._end_utterance(0.0)

    def _end_utterance(self, trailing_silence_s: float) -> None:
        self._listening = False
        self._speculating = False
        speech_end = self._clock() - trailing_silence_s
        utt, self._utt = self._utt, None
        self._tasks.spawn(self._finish_turn(self._turn_id, speech_end, utt))

    # ----------------------------------------------------------------- text turns
    def submit_text(self, text: str) -> None:
        text = text.strip()
        if not text:
            raise SessionInputError("invalid_message", "text must not be empty")
        self._barge_in()
        self._turn_id += 1
        self.outbox.emit(ev.Transcript(self._turn_id, text, True))
        now = self._clock()
        self._start_reply(self._turn_id, text, {"speech_end": now, "stt_final": now})

    def interrupt(self) -> None:
        self._barge_in()

    async def end(self) -> str:
        """Stop replying and return what the conversation covered (the transport sends
        it as the last message before closing)."""
        self._barge_in()
        await asyncio.sleep(0)  # let the interrupted reply record what was heard
        history = await self._store.get_context(self.id)
        return self._llm.recap(history)

    # ---------------------------------------------------------------------- reply
    def _start_reply(
        self, turn_id: int, text: str, marks: dict[str, float], *, held: bool = False
    ) -> _Reply:
        reply = _Reply(turn_id, text, committed=not held, marks=marks)
        if not held:
            reply.go.set()
            reply.commit.set()
        if self.config.playback_acks:
            reply.playout.acked = 0.0
        reply.task = self._tasks.spawn(self._run_reply(reply, marks))
        if not held:
            self._reply = reply
        return reply

    def _barge_in(self) -> None:
        self._drop_speculation()
        reply, self._reply = self._reply, None
        if reply is None or reply.task is None or reply.task.done():
            return
        reply.task.cancel()
        self.outbox.drop_audio(reply.turn_id)
        self.outbox.emit(ev.Interrupted(reply.turn_id))
        self.last_barge_in = now = self._clock()
        self._audible_until = 0.0
        log.info("barge-in", extra={"session_id": self.id, "turn_id": reply.turn_id})
        heard = reply.playout.heard_text(now) if self.config.tts else reply.text
        self._tasks.spawn(self._record(reply.turn_id, reply.user_text, heard, interrupted=True))

    async def _run_reply(self, reply: _Reply, marks: dict[str, float]) -> None:
        history = await self._store.get_context(self.id)
        pieces: asyncio.Queue[str | None] = asyncio.Queue(maxsize=32)
        async with asyncio.TaskGroup() as group:
            if self.config.tts:
                group.create_task(self._speak(reply, pieces, marks))
            chunker = SentenceChunker()
            async for delta in self._llm.stream(reply.user_text, history):
                if not reply.text:
                    marks["llm_first_token"] = self._clock()
                reply.text += delta
                if reply.committed:
                    self.outbox.emit(ev.ResponseDelta(reply.turn_id, delta))
                    self._turns.agent_said(reply.text)
                for piece in chunker.push(delta):
                    await pieces.put(piece)
            for piece in chunker.flush():
                await pieces.put(piece)
            await pieces.put(None)
            await reply.commit.wait()  # a speculative reply waits for the turn to end
            self.outbox.emit(ev.ResponseDone(reply.turn_id, reply.text.strip()))
        if self._reply is reply:
            self._reply = None
        self._report(marks)
        await self._record(reply.turn_id, reply.user_text, reply.text.strip(), interrupted=False)

    async def _speak(self, reply: _Reply, pieces: asyncio.Queue[str | None], marks: dict) -> None:
        out_rate = self.config.output_rate
        resampler = (
            StreamResampler(self._tts.sample_rate, out_rate)
            if self._tts.sample_rate != out_rate
            else None
        )
        chunk_bytes = out_rate * self.config.audio_chunk_ms // 1000 * 2
        playout = reply.playout
        playout.lead = self.config.audio_lead_s
        pending = b""
        while (piece := await pieces.get()) is not None:
            marks.setdefault("tts_request", self._clock())
            playout.start_piece(piece)
            async for pcm in self._tts.synthesize(piece):
                if resampler is not None:
                    pcm = resampler.process(pcm)
                playout.add_synthesized(len(pcm) / 2 / out_rate)
                pending += pcm
                while len(pending) >= chunk_bytes:
                    chunk, pending = pending[:chunk_bytes], pending[chunk_bytes:]
                    await self._send_audio(reply, chunk, marks)
        if resampler is not None:
            tail = resampler.flush()
            playout.add_synthesized(len(tail) / 2 / out_rate)
            pending += tail
        if pending:
            await self._send_audio(reply, pending, marks)
        if reply.audio_started:
            self.outbox.emit(ev.AudioEnd(reply.turn_id))

    async def _send_audio(self, reply: _Reply, chunk: bytes, marks: dict[str, float]) -> None:
        if not reply.go.is_set():  # held (speculative) or paused (a possible barge-in)
            await reply.go.wait()
        playout = reply.playout
        if not reply.audio_started:
            reply.audio_started = True
            marks["first_audio"] = self._clock()
            self.outbox.emit(ev.AudioStart(reply.turn_id, self.config.output_rate))
        wait = playout.wait_before(self._clock())
        if wait > 0:
            await asyncio.sleep(wait)
        await self.outbox.emit_audio(ev.AudioFrame(reply.turn_id, chunk))
        playout.release(len(chunk) / 2 / self.config.output_rate)
        self._audible_until = playout.playhead

    def _report(self, marks: dict[str, float]) -> None:
        end = marks["speech_end"]
        stages = {k: v - end for k, v in marks.items() if k != "speech_end" and k != "tts_request"}
        if "tts_request" in marks and "first_audio" in marks:
            stages["tts_first_audio"] = marks["first_audio"] - marks["tts_request"]
        self.last_turn_stages = stages
        log.info(
            "turn stages",
            extra={"session_id": self.id, **{k: round(v * 1000) for k, v in stages.items()}},
        )
        self._observer.turn_completed(stages, self.config.mode)

    async def _record(self, turn_id: int, user: str, agent: str, *, interrupted: bool) -> None:
        self.turns += 1
        meta = {"mode": self.config.mode, "turn_id": turn_id, "interrupted": interrupted}
        try:
            await record_exchange(self._store, self._captures, self.id, user, agent, meta)
        except Exception:
            log.exception("session store append failed", extra={"session_id": self.id})
            self._captures.submit(Capture(self.id, user, agent, time.time(), meta))

    # -------------------------------------------------------------------- plumbing
    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.config.keepalive_s)
            with contextlib.suppress(Exception):
                await self._store.touch(self.id)

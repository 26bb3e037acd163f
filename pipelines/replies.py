"""The agent's side of the conversation: its replies, from the model's first token to the
last audio chunk the listener hears.

A reply streams the model's text (shown as `ResponseDelta`s), cuts it into sentences for
TTS and releases the audio paced to the listener (`pipelines.playout`), so that a barge-in
stops the agent within `audio_lead_s` and what is remembered is what was heard. At most
one reply is current (shown and spoken). At most one more is held: a speculative reply to
the transcript of a pause, generated while the caller may still go on, and shown and
spoken only if the turn ends as transcribed (`commit`); otherwise it is thrown away.

`Replies` carries out what the Session decides (start, hold, commit, duck, pause, resume,
interrupt); it never judges the caller's speech. Duck, pause and resume (protocol v1.1)
act on the reply the listener hears: the current one, or the last one while its tail
still plays. Its tasks come from the Session's
`TaskScope` (`spawn`), so none of them outlives the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from audio.resample import StreamResampler
from pipelines import events as ev
from pipelines.chunker import SentenceChunker
from pipelines.outbox import Outbox
from pipelines.playout import Playout
from pipelines.ports import SessionStore
from pipelines.providers import LanguageModel, TextToSpeech
from pipelines.session_config import SessionConfig
from pipelines.turn_records import TurnRecords

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any]], asyncio.Task[None]]


@dataclass(slots=True)
class Reply:
    """One reply to one user turn, as it is generated and played."""

    turn_id: int
    user_text: str
    #: Clock times of the reply's stages (`speech_end`, `llm_first_token`, `first_audio`...).
    marks: dict[str, float]
    task: asyncio.Task[None] | None = None
    playout: Playout = field(default_factory=Playout)
    text: str = ""
    audio_started: bool = False
    #: Set while the reply's audio may be released (cleared: held or paused).
    go: asyncio.Event = field(default_factory=asyncio.Event)
    #: A speculative reply is generated but shows and says nothing until committed.
    committed: bool = True
    #: Started during a pause, before the turn ended (released by `commit`).
    speculative: bool = False
    commit: asyncio.Event = field(default_factory=asyncio.Event)
    #: Told to the listener: played quieter (`duck`), until `resume`.
    ducked: bool = False
    #: Set when the reply is resumed or cut (`cut`: a barge-in stopped and recorded it), to
    #: wake a finished reply waiting for that verdict to be recorded (`Replies._settled`).
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    cut: bool = False

    @property
    def held_back(self) -> bool:
        """Ducked or paused for a caller who may be barging in."""
        return self.ducked or self.playout.paused

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


class Replies:
    def __init__(
        self,
        session_id: str,
        *,
        llm: LanguageModel,
        tts: TextToSpeech,
        store: SessionStore,
        outbox: Outbox,
        records: TurnRecords,
        config: SessionConfig,
        spawn: Spawn,
        on_said: Callable[[str], None],
        clock: Callable[[], float],
    ) -> None:
        self._session_id = session_id
        self._llm = llm
        self._tts = tts
        self._store = store
        self._outbox = outbox
        self._records = records
        #: The session's current configuration (replaced when the session is reconfigured).
        self.config = config
        self._spawn = spawn
        #: Told the agent's words as they are shown (turn-taking recognises their echo).
        self._on_said = on_said
        self._clock = clock
        self._current: Reply | None = None
        self._held: Reply | None = None
        #: The last reply whose audio was released, after its task ended (its tail plays).
        self._tail: Reply | None = None
        #: Records of finished replies being written: `close` lets them finish.
        self._recording: set[asyncio.Task[None]] = set()
        #: When the reply audio released so far will have finished playing (listener's clock).
        self.audible_until = 0.0
        #: Clock time of the last barge-in (the transport measures its reaction from it).
        self.last_barge_in = 0.0
        #: Clock time the agent last yielded to a candidate barge-in (ducked or paused).
        self.last_yield = 0.0

    # -------------------------------------------------------------- current reply
    def busy(self, now: float) -> bool:
        """A reply is being generated or its audio is still playing (or paused)."""
        reply = self._current
        return (reply is not None and reply.running) or self._audible(now) is not None

    def _audible(self, now: float) -> Reply | None:
        """The reply the listener hears, or is about to hear: the current one, or the
        last one while its released audio still plays or is paused."""
        for reply in (self._current, self._tail):
            if reply is not None and (
                reply.running or reply.playout.paused or now < reply.playout.playhead
            ):
                return reply
        return None

    def start(self, turn_id: int, text: str, marks: dict[str, float]) -> None:
        """Answer `text` now; a held reply is stale and is dropped."""
        self.drop_held()
        self._current = self._launch(turn_id, text, marks, held=False)

    def duck(self) -> None:
        """A young candidate barge-in: the listener hears the reply quieter from now on."""
        now = self._clock()
        reply = self._audible(now)
        if reply is None or reply.ducked:
            return
        reply.ducked = True
        reply.playout.duck(now)
        self._outbox.emit(ev.Duck(reply.turn_id, -abs(self.config.duck_db)))
        self.last_yield = now

    def pause(self) -> None:
        """Stop releasing audio, and the listener's playback where it is (protocol v1.1):
        the caller may be barging in. Nothing is lost: `resume` plays on from there."""
        now = self._clock()
        reply = self._audible(now)
        if reply is None:
            return
        reply.go.clear()
        if reply.playout.pause(now):
            self._outbox.emit(ev.Pause(reply.turn_id, _ms(reply.playout.heard_seconds(now))))
            if not reply.ducked:
                self.last_yield = now

    def resume(self) -> None:
        """Full volume, and playing again from where the reply paused (also for a reply
        whose audio has played out meanwhile: the listener is not left ducked)."""
        now = self._clock()
        reply = self._audible(now)
        tail = self._tail
        if reply is None and tail is not None and tail.held_back:
            reply = tail
        if reply is None:
            return
        reply.ducked = False
        reply.settled.set()
        if reply.playout.resume(now):
            self._outbox.emit(ev.Resume(reply.turn_id, _ms(reply.playout.heard_seconds(now))))
            self.audible_until = max(self.audible_until, reply.playout.playhead)
        reply.go.set()

    def interrupt(self) -> None:
        """Barge-in: cancel the current and the held reply, drop the queued audio, and
        remember what the listener heard."""
        self.drop_held()
        reply, self._current = self._current, None
        if reply is None or not reply.running:
            self._cut_tail()
            return
        reply.cancel()
        self._cut(reply, record=True)
        log.info("barge-in", extra={"session_id": self._session_id, "turn_id": reply.turn_id})

    def _cut_tail(self) -> None:
        """A barge-in after the reply's last audio was released, while that audio plays
        ducked or paused: it is not left waiting for a `resume` that will not come. If the
        reply waits for this verdict to be recorded, it is recorded as far as it was heard
        before the agent ducked. (A reply recorded already, as done, stays so: at most
        its last `audio_lead_s` played under the caller's voice.)"""
        tail, self._tail = self._tail, None
        if tail is None or tail.cut or not tail.held_back:
            return
        self._cut(tail, record=tail.running)  # running: its record waits for this verdict
        tail.settled.set()

    def _cut(self, reply: Reply, *, record: bool) -> None:
        """The listener stops hearing `reply` now; `record`: remember it as far as heard."""
        reply.cut = True  # nothing more of it goes out, even before a cancel lands
        self._outbox.drop_audio(reply.turn_id)
        self._outbox.emit(ev.Interrupted(reply.turn_id))
        self.last_barge_in = now = self._clock()
        self.audible_until = 0.0
        if record:
            _stopped(reply, now)
            self._spawn(self._record(reply, self._heard(reply, now, cut=True), interrupted=True))

    async def close(self) -> None:
        """The session ends mid-reply: record what was heard, as a barge-in would; otherwise
        it would be lost with the cancelled reply task. Records being written finish."""
        await self._finish_records()
        reply, self._current = self._current, None
        tail = self._tail
        if reply is None and tail is not None and tail.running and not tail.cut and tail.held_back:
            reply = tail  # its last audio went out under the caller's voice: not recorded
        if reply is None or not reply.running:
            return
        reply.cancel()
        now = self._clock()
        _stopped(reply, now)
        heard = self._heard(reply, now, cut=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self._record(reply, heard, interrupted=True)

    async def _finish_records(self, timeout_s: float = 2.0) -> None:
        pending = set(self._recording)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout_s)
        for task in late:  # the store hangs: no task outlives the session
            task.cancel()

    def playback_acked(self, turn_id: int, seconds: float) -> None:
        """The listener's player reports `seconds` of reply `turn_id` played (Twilio mark),
        the current reply or the one whose last audio still plays."""
        for reply in (self._current, self._tail):
            if reply is not None and reply.turn_id == turn_id:
                acked = reply.playout.acked or 0.0
                reply.playout.acked = max(acked, seconds)
                return

    # ---------------------------------------------------------------- held reply
    def hold(self, turn_id: int, text: str) -> None:
        """Start answering `text` ahead of the turn's end, silently, replacing any held reply."""
        self.drop_held()
        self._held = self._launch(turn_id, text, {}, held=True)

    def drop_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.cancel()
            self._outbox.drop_audio(held.turn_id)

    def commit(self, turn_id: int, text: str, marks: dict[str, float]) -> bool:
        """Release the held reply if it answers this turn; False if there is none."""
        reply, self._held = self._held, None
        if reply is None or not reply.running:
            return False
        if reply.turn_id != turn_id:
            reply.cancel()
            return False
        reply.user_text = text
        end = marks["speech_end"]
        # Stages the speculation finished before the turn ended took no time after it.
        reply.marks.update({k: max(v, end) for k, v in reply.marks.items()})
        reply.marks.update(marks)
        reply.committed = True
        self._current = reply
        if reply.text:
            self._outbox.emit(ev.ResponseDelta(reply.turn_id, reply.text))
            self._on_said(reply.text)
        reply.commit.set()
        reply.go.set()
        log.debug("speculative reply committed", extra={"session_id": self._session_id})
        return True

    # ---------------------------------------------------------------- production
    def _launch(self, turn_id: int, text: str, marks: dict[str, float], *, held: bool) -> Reply:
        reply = Reply(turn_id, text, marks, committed=not held, speculative=held)
        if not held:
            reply.go.set()
            reply.commit.set()
        if self.config.playback_acks:
            reply.playout.acked = 0.0
        reply.task = self._spawn(self._run(reply))
        return reply

    async def _run(self, reply: Reply) -> None:
        history = await self._store.get_context(self._session_id)
        marks = reply.marks
        pieces: asyncio.Queue[str | None] = asyncio.Queue(maxsize=32)
        async with asyncio.TaskGroup() as group:
            if self.config.tts:
                group.create_task(self._speak(reply, pieces))
            chunker = SentenceChunker()
            marks["llm_request"] = self._clock()
            async for delta in self._llm.stream(reply.user_text, history):
                if not reply.text:
                    marks["llm_first_token"] = self._clock()
                reply.text += delta
                if reply.committed:
                    self._outbox.emit(ev.ResponseDelta(reply.turn_id, delta))
                    self._on_said(reply.text)
                for piece in chunker.push(delta):
                    await pieces.put(piece)
            marks["llm_done"] = self._clock()
            for piece in chunker.flush():
                await pieces.put(piece)
            await pieces.put(None)
            await reply.commit.wait()  # a speculative reply waits for the turn to end
            self._outbox.emit(ev.ResponseDone(reply.turn_id, reply.text.strip()))
        if self._current is reply:
            self._current = None
            if reply.audio_started:
                self._tail = reply
        self._records.report(marks, self.config.mode)
        if await self._settled(reply):
            await self._keep(self._record(reply, reply.text.strip(), interrupted=False))

    async def _keep(self, record: Coroutine[Any, Any, None]) -> None:
        """Write a finished reply's record even if the session ends meanwhile: the client
        may close as soon as it has the reply, which cancels the reply's task; `close`
        waits for the record instead of losing it."""
        task = asyncio.ensure_future(record)
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)
        await asyncio.shield(task)

    async def _settled(self, reply: Reply) -> bool:
        """The reply is done; if its last audio went out while the caller talks over it
        (ducked or paused), wait until that is judged: True if it was not a barge-in (the
        reply was heard), False if one cut it (the cut records it, as far as it was
        heard)."""
        while reply.audio_started and reply.held_back and not reply.cut:
            reply.settled.clear()
            await reply.settled.wait()
        return not reply.cut

    async def _speak(self, reply: Reply, pieces: asyncio.Queue[str | None]) -> None:
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
            reply.marks.setdefault("tts_request", self._clock())
            playout.start_piece(piece)
            async for pcm in self._tts.synthesize(piece):
                if resampler is not None:
                    pcm = resampler.process(pcm)
                playout.add_synthesized(len(pcm) / 2 / out_rate)
                pending += pcm
                while len(pending) >= chunk_bytes:
                    chunk, pending = pending[:chunk_bytes], pending[chunk_bytes:]
                    await self._send_audio(reply, chunk)
        if resampler is not None:
            tail = resampler.flush()
            playout.add_synthesized(len(tail) / 2 / out_rate)
            pending += tail
        if "tts_request" in reply.marks:
            reply.marks["tts_done"] = self._clock()
        if pending:
            await self._send_audio(reply, pending)
        if reply.audio_started and not reply.cut:
            reply.marks["playout_end"] = playout.playhead
            self._outbox.emit(ev.AudioEnd(reply.turn_id))

    async def _send_audio(self, reply: Reply, chunk: bytes) -> None:
        playout = reply.playout
        while True:
            if not reply.go.is_set():  # held (speculative) or paused (a possible barge-in)
                await reply.go.wait()
            if not reply.audio_started:
                reply.audio_started = True
                reply.marks["first_audio"] = self._clock()
                self._outbox.emit(ev.AudioStart(reply.turn_id, self.config.output_rate))
            wait = playout.wait_before(self._clock())
            if wait <= 0:
                break
            await asyncio.sleep(wait)
            if reply.go.is_set():
                break  # not paused meanwhile: release it
        if reply.cut:
            return
        await self._outbox.emit_audio(ev.AudioFrame(reply.turn_id, chunk))
        playout.release(len(chunk) / 2 / self.config.output_rate)
        self.audible_until = playout.playhead

    # ------------------------------------------------------------------ memory
    def _heard(self, reply: Reply, now: float, *, cut: bool = False) -> str:
        return reply.playout.heard_text(now, cut=cut) if self.config.tts else reply.text

    async def _record(self, reply: Reply, agent: str, *, interrupted: bool) -> None:
        await self._records.record(
            reply.turn_id,
            reply.user_text,
            agent,
            interrupted=interrupted,
            mode=self.config.mode,
            marks=reply.marks,
            speculative=reply.speculative,
        )


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _stopped(reply: Reply, now: float) -> None:
    """Mark a reply cut off at `now`: its audio stops playing there too."""
    reply.marks["interrupted"] = now
    if reply.audio_started:
        reply.marks["playout_end"] = min(reply.playout.playhead, now)

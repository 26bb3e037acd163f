"""The Session's side of turn-taking: it feeds `pipelines.turns.TurnTaker` and carries out
the `Act`s it returns (pause, resume, interrupt, end the turn, speculate, commit).

A mixin of `Session`, kept in its own file so that each file stays small and has one job:
session.py moves audio and replies, this file decides what the caller's speech means for
them. It uses the Session's state directly; nothing else should inherit it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from audio.pcm import rms_dbfs
from pipelines import events as ev
from pipelines.turns import Act, Utterance

if TYPE_CHECKING:
    from pipelines.session import Session, _Reply

log = logging.getLogger(__name__)


class TurnTaking:
    """Turn-taking methods of `Session` (see the module docstring)."""

    def _speech_started(self: Session) -> None:
        self.outbox.emit(ev.Vad(True))
        busy = self._agent_busy(self._clock())
        self._utt, acts = self._turns.speech_started(busy, self.config.endpointer.start_ms)
        self._act(acts)
        if not busy:
            self._barge_in()
        self._turn_id += 1
        self._listening = True
        self._speculating = False
        assert self._stream is not None
        for frame in self._endpointer.take_preroll():
            self._stream.push(frame)

    def _turn_frame(self: Session, frame: bytes) -> None:
        """One speech frame in continuous mode: let the turn-taker judge it."""
        silence = self._endpointer.detector.trailing_silence_ms
        voiced = silence == 0
        if voiced and self._echo_mode and rms_dbfs(frame) < self.config.echo_gate_dbfs:
            voiced = False  # as quiet as the agent's echo: not the caller taking the floor
        acts = self._turns.frame(voiced, silence)
        if acts:
            self._act(acts)

    def _speech_ended(self: Session, silence_ms: float) -> None:
        self.outbox.emit(ev.Vad(False))
        if self._listening:
            self._end_utterance(silence_ms / 1000)

    def _on_interim(self: Session, text: str) -> None:
        if self._listening:
            self.outbox.emit(ev.Transcript(self._turn_id, text, False))
            acts = self._turns.interim(text)
            if acts:
                self._act(acts)

    def _act(self: Session, acts: list[Act]) -> None:
        for act in acts:
            if act is Act.PAUSE_REPLY:
                if self._reply is not None:
                    self._reply.go.clear()
            elif act is Act.RESUME_REPLY:
                if self._reply is not None:
                    self._reply.go.set()
            elif act is Act.INTERRUPT:
                self._barge_in()
            elif act is Act.END_TURN:
                silence = self._endpointer.detector.trailing_silence_ms
                self._endpointer.force_end()
                self._speech_ended(silence)
            elif act is Act.SPECULATE:
                utt = self._turns.current
                if utt is not None and utt.speculated:
                    self._start_speculation(utt.speculated)
            elif act is Act.DROP_SPECULATION:
                self._drop_speculation()

    async def _finish_turn(
        self: Session, turn_id: int, speech_end: float, utt: Utterance | None
    ) -> None:
        assert self._stream is not None
        text = (await self._stream.finalize()).strip()
        stt_done = self._clock()
        acts = self._turns.final(utt, text) if utt is not None else [Act.RESPOND]
        if Act.DISMISS in acts:  # noise, a backchannel or echo: the agent goes on
            self.outbox.emit(ev.Transcript(turn_id, text, True))
            self._act(acts)
            return
        if self._carry:
            text, self._carry = f"{self._carry} {text}".strip(), ""
        self.outbox.emit(ev.Transcript(turn_id, text, True))
        others = [a for a in acts if a is not Act.RESPOND and a is not Act.COMMIT]
        if not text:
            self._act(others)
            return
        if self._listening:
            # The user went on before we could answer: answer both parts together.
            self._act(others)
            self._drop_speculation()
            self._carry = text
            return
        marks = {"speech_end": speech_end, "stt_final": stt_done}
        if Act.COMMIT in acts and self._commit_speculation(turn_id, text, marks):
            return
        self._act(others)
        self._drop_speculation()
        self._start_reply(turn_id, text, marks)

    # ----------------------------------------------------------------- speculation
    def _start_speculation(self: Session, text: str) -> None:
        self._drop_speculation()
        self._spec = self._start_reply(self._turn_id, text, {}, held=True)

    def _drop_speculation(self: Session) -> None:
        spec, self._spec = self._spec, None
        if spec is not None and spec.task is not None:
            spec.task.cancel()
            self.outbox.drop_audio(spec.turn_id)

    def _commit_speculation(
        self: Session, turn_id: int, text: str, marks: dict[str, float]
    ) -> bool:
        """Release the held reply if it answers this turn; False if there is none."""
        reply, self._spec = self._spec, None
        if reply is None or reply.task is None or reply.task.done():
            return False
        if reply.turn_id != turn_id:
            reply.task.cancel()
            return False
        reply.user_text = text
        end = marks["speech_end"]
        # Stages the speculation finished before the turn ended took no time after it.
        reply.marks.update({k: max(v, end) for k, v in reply.marks.items()})
        reply.marks.update(marks)
        reply.committed = True
        self._reply = reply
        if reply.text:
            self.outbox.emit(ev.ResponseDelta(reply.turn_id, reply.text))
            self._turns.agent_said(reply.text)
        reply.commit.set()
        reply.go.set()
        log.debug("speculative reply committed", extra={"session_id": self.id})
        return True

    # ------------------------------------------------------------ agent & playback
    def _agent_busy(self: Session, now: float) -> bool:
        """A reply is being generated or its audio is still playing."""
        reply = self._reply
        running = reply is not None and reply.task is not None and not reply.task.done()
        return running or now < self._audible_until

    def _guard_echo(self: Session) -> None:
        """While the agent's audio plays, a stricter VAD keeps its echo from starting turns."""
        audible = self._clock() < self._audible_until
        if audible != self._echo_mode:
            self._echo_mode = audible
            mode = self.config.echo_vad_aggressiveness if audible else None
            self._endpointer.set_aggressiveness(
                mode if mode is not None else self.config.endpointer.aggressiveness
            )

    def playback_acked(self: Session, turn_id: int, seconds: float) -> None:
        """The listener's player reports `seconds` of reply `turn_id` played (Twilio mark)."""
        reply: _Reply | None = self._reply
        if reply is not None and reply.turn_id == turn_id:
            acked = reply.playout.acked or 0.0
            reply.playout.acked = max(acked, seconds)

"""Who has the floor: turn-taking for one conversation, as decisions.

The Session tells the floor what it observes (the caller started speaking while the agent
was busy or not, each speech frame, interim and final transcripts, what the agent said)
and gets back what to do: `pipelines.turns.Act`s, and for a final transcript a `Verdict`.
The floor touches no audio, reply or task and reads no clock, so its rules are tested
without an event loop (tests/unit/test_floor.py); the Session carries the acts out.

It owns the `TurnTaker` (the per-utterance state machine) and the turn state around it:
the utterance in progress, the echo gate of a phone line, and a transcript left
unanswered because the caller went on before the agent could answer it.
"""

from __future__ import annotations

from dataclasses import dataclass

from audio.pcm import rms_dbfs
from pipelines.turns import Act, TurnConfig, TurnTaker, Utterance

#: Acts of a final transcript that the Verdict expresses as `answer`, `commit` or nothing.
_VERDICT_ONLY = frozenset({Act.RESPOND, Act.COMMIT, Act.DISMISS})


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a final transcript means for the conversation."""

    #: The final transcript to show (with an earlier unanswered part in front of it).
    shown: str
    #: Acts to carry out before anything is answered (confirm or dismiss an interruption,
    #: drop a stale held reply).
    acts: tuple[Act, ...] = ()
    #: The text to answer; empty: answer nothing (noise, a backchannel, echo, or the caller
    #: went on and will be answered together with what follows).
    answer: str = ""
    #: The held speculative reply answered the same words: release it instead of a new one.
    commit: bool = False


class Floor:
    def __init__(self, config: TurnConfig | None = None) -> None:
        self._taker = TurnTaker(config)
        self._utt: Utterance | None = None
        self._echo_gate: float | None = None
        self._carry = ""

    def configure(self, config: TurnConfig) -> None:
        """New rules; the utterance in progress (if any) is forgotten with the old ones."""
        self._taker = TurnTaker(config)
        self._utt = None
        self._echo_gate = None

    def gate_echo(self, dbfs: float | None) -> None:
        """While the agent's audio plays on a phone line, voiced frames quieter than `dbfs`
        are its echo, not the caller (None: every voiced frame is the caller)."""
        self._echo_gate = dbfs

    # ------------------------------------------------------------------- facts
    def speech_started(
        self, agent_busy: bool, voiced_ms: int, *, pause_transcripts: bool | None = None
    ) -> list[Act]:
        """The caller started speaking (`voiced_ms` of it heard before the VAD said so);
        `agent_busy`: a reply is being generated or still playing; `pause_transcripts`: the
        recogniser in use now transcribes pauses (None: as the rules were configured)."""
        # Behind the echo gate, the start may be the agent's own echo: only a frame louder
        # than the gate ducks it.
        self._utt, acts = self._taker.speech_started(
            agent_busy,
            voiced_ms,
            duck=self._echo_gate is None,
            pause_transcripts=pause_transcripts,
        )
        if not agent_busy and Act.DROP_SPECULATION not in acts:
            acts.append(Act.DROP_SPECULATION)  # a new turn to an idle agent: a held reply is stale
        return acts

    def frame(self, frame: bytes, silence_ms: float) -> list[Act]:
        """One speech frame; `silence_ms` is the unvoiced time since the last voiced frame
        (0: this frame is voiced). Called for every 20 ms of the caller's speech."""
        voiced = silence_ms == 0
        gate = self._echo_gate
        if voiced and gate is not None and rms_dbfs(frame) < gate:
            voiced = False  # as quiet as the agent's echo: not the caller taking the floor
        return self._taker.frame(voiced, silence_ms)

    def interim(self, text: str) -> list[Act]:
        return self._taker.interim(text)

    def agent_said(self, text: str) -> None:
        """The agent's reply so far, as shown: its echo is not the caller's words."""
        self._taker.agent_said(text)

    @property
    def judging_barge_in(self) -> bool:
        """The caller is talking over the agent and it is not yet known whether it is an
        interruption: its pauses are not turns to answer ahead (no speculative reply)."""
        utt = self._utt
        return utt is not None and utt.candidate

    @property
    def speculated(self) -> str | None:
        """The transcript a `SPECULATE` act asks to answer ahead of the turn's end."""
        utt = self._taker.current
        return utt.speculated if utt is not None else None

    def released(self, interim: str) -> list[Act]:
        """Push-to-talk: the button is up, `interim` the latest transcript: a held reply
        may start on it (`SPECULATE`); `utterance_ended` then hands the utterance back for
        its final transcript to commit or drop that reply."""
        self._utt, acts = self._taker.released(interim)
        return acts

    def speech_ended(self) -> None:
        """The endpointer ended the utterance on its own (its backstop silence or length)."""
        if self._utt is not None:
            self._taker.ended(self._utt)

    def utterance_ended(self) -> Utterance | None:
        """The caller's utterance is over: hand it back with its final transcript to `final`
        (None when there was none to judge, as in push-to-talk)."""
        utt, self._utt = self._utt, None
        return utt

    def abandoned(self, utt: Utterance | None) -> list[Act]:
        """The utterance's final transcript failed: what to undo (a held-back reply)."""
        return self._taker.abandoned(utt) if utt is not None else []

    def final(self, utt: Utterance | None, text: str, *, caller_went_on: bool) -> Verdict:
        """The final transcript of an ended utterance. `caller_went_on`: the caller is
        already speaking again (a new utterance began before this transcript arrived)."""
        acts = self._taker.final(utt, text) if utt is not None else [Act.RESPOND]
        todo = tuple(a for a in acts if a not in _VERDICT_ONLY)
        if Act.DISMISS in acts:  # noise, a backchannel or echo: the agent goes on
            return Verdict(text, todo)
        if self._carry:
            text, self._carry = f"{self._carry} {text}".strip(), ""
            if Act.COMMIT in acts:  # the held reply answers only the last part
                acts = [a for a in acts if a is not Act.COMMIT]
                todo = (*todo, Act.DROP_SPECULATION)
        if not text:
            return Verdict(text, todo)
        if caller_went_on:  # answer both parts together when the caller is done
            self._carry = text
            return Verdict(text, (*todo, Act.DROP_SPECULATION))
        return Verdict(text, todo, answer=text, commit=Act.COMMIT in acts)

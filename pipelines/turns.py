"""Turn-taking for continuous conversation: when has the caller finished, and when are they
really interrupting.

A pure state machine in the sans-I/O style of `audio.vad`: the Session feeds it what it
observes (speech start, one flag per speech frame, interim and final transcripts) and acts on
the `Act`s it returns. It reads no clock and touches no task, so every rule is tested to the
frame in tests/unit/test_turns.py.

The rules, each a `TurnConfig` field (settings in server/settings.py):

* End of turn adapts to the words: after a finished sentence ("... the immune system.") the
  turn ends after `finished_silence_ms`; after a trailing "and", "so", "because", "um", "the"
  it waits `unfinished_silence_ms`; otherwise (no final punctuation, often a pause
  mid-sentence: "I learned that the mitochondria") `end_silence_ms`. When the recogniser sends a
  transcript of the pause itself (Whisper's speculative final), the machine waits for it (up
  to the unfinished threshold) rather than guess.
* Speculative reply: when a pause begins, the latest interim (a streaming recogniser's; the
  transcript of a recogniser that transcribes pauses is waited for), or one that arrives
  during the pause with other words, starts the reply, held silent; if the final transcript
  says the same it is released at once (`COMMIT`), if the caller goes on it is thrown away
  (`DROP_SPECULATION`). In push-to-talk the latest interim does so when
  the button is released (`released`), while a streaming recogniser finalizes.
* Barge-in: speech while the agent talks is only a candidate. At once (the first frame the
  VAD calls speech) the reply is ducked (`DUCK_REPLY`: the listener hears it much
  quieter, so the agent audibly yields within the VAD's onset time), and when the caller
  stops for `duck_release_ms` it comes back to full volume (`RESUME_REPLY`): a backchannel
  or a cough leaves a dip in volume, never a silence. After `barge_in_pause_ms` of voiced
  audio the reply pauses (`PAUSE_REPLY`: the listener's playback stops where it is). The
  interruption is confirmed (`INTERRUPT`) by a word of intent ("stop", "wait") or
  `barge_in_min_words` words that are not backchannels, filler or the agent's own words
  echoed back, once `barge_in_min_speech_ms` were voiced (words heard sooner count from
  the frame that makes it so), or by voiced speech lasting
  `barge_in_confirm_ms` that is not a backchannel. A candidate that ends without that (a
  cough, a noise burst, "mhm", echo) is dismissed and the reply resumes (`RESUME_REPLY`)
  where it paused: nothing of it is lost.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

#: Acknowledgements that keep the floor with the speaker.
DEFAULT_BACKCHANNELS: frozenset[str] = frozenset(
    "mhm mm mmm hmm hm mhmm uh-huh uh huh mm-hmm yeah yep yes ya ok okay right sure alright "
    "aha ah oh i see got it cool nice wow great exactly true".split()
)
#: Words that alone mean "let me speak" even when the utterance is short.
INTENT_WORDS: frozenset[str] = frozenset(
    """stop wait hold hang pause sorry excuse pardon no nope actually but what why how
    repeat again explain tell mean slow slower louder""".split()
)
#: Function words: on their own they carry no intent (and recognisers hallucinate them on
#: hums and noise), so they do not count towards `barge_in_min_words`.
FUNCTION_WORDS: frozenset[str] = frozenset(
    """a an the and or so of to in on at it its is be was were are am i you he she we they
    me him her us them my your this that there then um uh er erm ah like just""".split()
)
#: A turn that ends on one of these is probably not finished.
TRAILING_WORDS: frozenset[str] = frozenset(
    """and so because but or um uh er erm the a an of to with for in on at from my your his
    her their our is are was were if than then like which that who when where while about
    into as also plus cause""".split()
)
#: Words that open a clause needing a verb of its own ("I learned that the ...").
CLAUSE_OPENERS: frozenset[str] = frozenset(
    "that which because if when while although though unless whether".split()
)
DETERMINERS: frozenset[str] = frozenset(
    "the a an my your his her its our their this these those some".split()
)
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class Completion(enum.Enum):
    FINISHED = "finished"
    UNFINISHED = "unfinished"
    UNKNOWN = "unknown"


def completion(text: str) -> Completion:
    """Does the transcript read like a finished thought?"""
    stripped = text.strip()
    ws = words(stripped)
    if not ws:
        return Completion.UNKNOWN
    if ws[-1] in TRAILING_WORDS or stripped.endswith(("...", "…", ",", "-")):
        return Completion.UNFINISHED
    if _verbless_clause(ws):
        # Recognisers put a full stop after "I learned that the mitochondria" too: it
        # is said with a pause in the middle, not finished.
        return Completion.UNKNOWN
    if stripped.endswith((".", "?", "!")):
        return Completion.FINISHED
    return Completion.UNKNOWN


def _verbless_clause(ws: list[str]) -> bool:
    """It ends on a clause opener, a determiner and a noun: "... that the mitochondria",
    "... because my brother" (not "... that my dog barks")."""
    return len(ws) >= 3 and ws[-3] in CLAUSE_OPENERS and ws[-2] in DETERMINERS


class Act(enum.Enum):
    """What the Session must do."""

    #: Lower the reply's volume: the caller may be barging in (a young candidate).
    DUCK_REPLY = "duck_reply"
    #: Stop the reply's playback where it is (nothing is lost): the candidate grew.
    PAUSE_REPLY = "pause_reply"
    #: The candidate interruption was not one (or is quiet for now): the reply plays on at
    #: full volume, from where it paused.
    RESUME_REPLY = "resume_reply"
    #: Confirmed barge-in: cancel the reply, drop its audio, keep what was heard.
    INTERRUPT = "interrupt"
    #: The caller has finished: end the utterance and finalize its transcript.
    END_TURN = "end_turn"
    #: Start a held reply on `Utterance.speculated`.
    SPECULATE = "speculate"
    #: The held reply is stale (the caller went on, or the final differs): cancel it.
    DROP_SPECULATION = "drop_speculation"
    #: The final transcript is a new turn: answer it.
    RESPOND = "respond"
    #: The held reply was right: release it.
    COMMIT = "commit"
    #: Not a turn (noise, backchannel, echo): answer nothing.
    DISMISS = "dismiss"


@dataclass(slots=True)
class TurnConfig:
    end_silence_ms: int = 700
    finished_silence_ms: int = 350
    unfinished_silence_ms: int = 1600
    #: Pause after which the recogniser is asked for a transcript (speculation).
    speculate_after_ms: int = 200
    speculative_reply: bool = True
    #: Voiced speech over the agent before words can confirm an interruption.
    barge_in_min_speech_ms: int = 200
    barge_in_confirm_ms: int = 1200
    barge_in_min_words: int = 3
    barge_in_pause: bool = True
    #: Voiced speech over the agent after which its reply pauses (ducked until then).
    barge_in_pause_ms: int = 1000
    #: Duck the reply from the candidate's first frame (False: only pause it).
    barge_in_duck: bool = True
    #: Silence within a candidate after which a ducked (not paused) reply is loud again.
    duck_release_ms: int = 300
    #: The recogniser transcribes each pause (Whisper's speculative final): wait for it
    #: (the default of an utterance; `speech_started` may say otherwise for one).
    transcript_on_pause: bool = False
    frame_ms: int = 20
    backchannels: frozenset[str] = field(default_factory=lambda: DEFAULT_BACKCHANNELS)

    def __post_init__(self) -> None:
        for name in ("end_silence_ms", "finished_silence_ms", "unfinished_silence_ms"):
            if getattr(self, name) < self.frame_ms:
                raise ValueError(f"{name} must be at least frame_ms ({self.frame_ms})")
        if self.barge_in_min_words < 1:
            raise ValueError("barge_in_min_words must be at least 1")

    @property
    def longest_silence_ms(self) -> int:
        return max(self.end_silence_ms, self.finished_silence_ms, self.unfinished_silence_ms)


@dataclass(slots=True, eq=False)
class Utterance:
    """One stretch of caller speech, from VAD start to its final transcript."""

    #: The agent was talking (or about to) when it began: a candidate interruption.
    during_reply: bool
    voiced_ms: int = 0
    text: str = ""
    paused: bool = False
    ducked: bool = False
    confirmed: bool = False
    in_pause: bool = False
    pause_text_pending: bool = False
    speculated: str | None = None
    ended: bool = False
    #: Unvoiced time since the last voiced frame, as of the last frame.
    silence_ms: float = 0.0
    #: The recogniser sends a transcript of each pause of this utterance (else it streams
    #: interims as it hears).
    pause_transcripts: bool = False

    @property
    def candidate(self) -> bool:
        return self.during_reply and not self.confirmed


class TurnTaker:
    def __init__(self, config: TurnConfig | None = None) -> None:
        self.config = config or TurnConfig()
        self.current: Utterance | None = None
        #: The agent's words so far in the current reply, to recognise its echo.
        self._agent_words: set[str] = set()

    # ------------------------------------------------------------------ agent side
    def agent_said(self, text: str) -> None:
        """The agent's current reply text (called as it grows); echoes of it are ignored."""
        self._agent_words = set(words(text))

    # ------------------------------------------------------------------- user side
    def speech_started(
        self,
        agent_busy: bool,
        voiced_ms: int = 0,
        *,
        duck: bool = True,
        pause_transcripts: bool | None = None,
    ) -> tuple[Utterance, list[Act]]:
        """VAD start. `agent_busy`: a reply is being generated or is still playing.
        `duck`: the start may duck the reply at once (False: only a voiced frame may, as
        behind a phone line's echo gate). `pause_transcripts`: the recogniser in use now
        transcribes pauses (None: `transcript_on_pause`); a chain of recognisers may fall
        back from a streaming one to one that does, or the other way.

        Returns the new utterance and, if a held reply of the previous utterance was pending,
        `DROP_SPECULATION` (the caller went on before it was committed).
        """
        acts: list[Act] = []
        previous = self.current
        if previous is not None and previous.speculated is not None:
            previous.speculated = None
            acts.append(Act.DROP_SPECULATION)
        if pause_transcripts is None:
            pause_transcripts = self.config.transcript_on_pause
        utt = Utterance(
            during_reply=agent_busy, voiced_ms=voiced_ms, pause_transcripts=pause_transcripts
        )
        self.current = utt
        if agent_busy and duck and self.config.barge_in_duck:
            utt.ducked = True
            acts.append(Act.DUCK_REPLY)
        return utt, acts

    def frame(self, voiced: bool, silence_ms: float) -> list[Act]:
        """One speech frame; `silence_ms` is the unvoiced time since the last voiced frame."""
        utt = self.current
        if utt is None or utt.ended:
            return []
        cfg = self.config
        acts: list[Act] = []
        if voiced:
            utt.voiced_ms += cfg.frame_ms
        utt.silence_ms = silence_ms
        if silence_ms == 0:
            if utt.in_pause:  # the caller went on
                utt.in_pause = False
                utt.pause_text_pending = False
                if utt.speculated is not None:
                    utt.speculated = None
                    acts.append(Act.DROP_SPECULATION)
        elif silence_ms >= cfg.speculate_after_ms and not utt.in_pause:
            utt.in_pause = True
            utt.pause_text_pending = utt.pause_transcripts and not utt.candidate
            if not utt.pause_text_pending:
                # A streaming recogniser's latest interim may already hold every word:
                # answer it now rather than at the next interim (up to its cadence later).
                acts.extend(self._speculate(utt, utt.text))
        if utt.candidate:
            acts.extend(self._yield_floor(utt, voiced, silence_ms))
            if self._confirmed_by_length(utt, voiced):
                acts.extend(self._confirm(utt))
        if silence_ms >= self.end_threshold_ms(utt):
            acts.append(self._end(utt))
        return acts

    def interim(self, text: str) -> list[Act]:
        utt = self.current
        if utt is None or utt.ended or not text.strip():
            return []
        utt.text = text
        if utt.in_pause:
            utt.pause_text_pending = False
        if utt.candidate:
            if utt.voiced_ms >= self.config.barge_in_min_speech_ms and self._wants_floor(text):
                return self._confirm(utt)
            return []
        acts = self._speculate(utt, text) if utt.in_pause else []
        if utt.in_pause and utt.silence_ms >= self.end_threshold_ms(utt):
            acts.append(self._end(utt))  # the pause is already long enough for these words
        return acts

    def released(self, text: str) -> tuple[Utterance, list[Act]]:
        """Push-to-talk: the button is up and `text` is the latest interim. Its reply may
        start now, held (`SPECULATE`), while the recogniser finalizes; the final transcript
        releases it if it says the same words (`COMMIT`), else it is dropped."""
        utt = Utterance(during_reply=False, text=text, ended=True)
        self.current = utt
        if self.config.speculative_reply and words(text):
            utt.speculated = text
            return utt, [Act.SPECULATE]
        return utt, []

    def abandoned(self, utt: Utterance) -> list[Act]:
        """The utterance will never have a final transcript (the recogniser failed): a
        reply it held back plays on."""
        if self.current is utt:
            self.current = None
        held_back = utt.candidate and (utt.paused or utt.ducked)
        utt.paused = utt.ducked = False
        acts = [Act.RESUME_REPLY] if held_back else []
        if utt.speculated is not None:  # nothing will commit it
            utt.speculated = None
            acts.append(Act.DROP_SPECULATION)
        return acts

    def ended(self, utt: Utterance) -> None:
        """The utterance ended by the endpointer's own limit (or by force)."""
        utt.ended = True
        if self.current is utt and utt.speculated is None:
            self.current = None

    def final(self, utt: Utterance, text: str) -> list[Act]:
        """The final transcript of an ended utterance: what is it?"""
        if self.current is utt:
            self.current = None
        speculated, utt.speculated = utt.speculated, None
        drop = [Act.DROP_SPECULATION] if speculated is not None else []
        if utt.candidate:
            if self._wants_floor(text):
                return [*drop, *self._confirm(utt), Act.RESPOND]
            held_back = utt.paused or utt.ducked
            utt.paused = utt.ducked = False
            return [*drop, Act.RESUME_REPLY, Act.DISMISS] if held_back else [*drop, Act.DISMISS]
        if not words(text):
            return [*drop, Act.DISMISS]
        if speculated is not None and words(speculated) == words(text):
            return [Act.COMMIT]
        return [*drop, Act.RESPOND]

    # ------------------------------------------------------------------- decisions
    def end_threshold_ms(self, utt: Utterance) -> int:
        cfg = self.config
        if utt.candidate:
            return cfg.end_silence_ms
        if utt.pause_text_pending:
            return cfg.unfinished_silence_ms
        done = completion(utt.text)
        if done is Completion.FINISHED:
            return cfg.finished_silence_ms
        if done is Completion.UNFINISHED:
            return cfg.unfinished_silence_ms
        return cfg.end_silence_ms

    def content_words(self, text: str) -> list[str]:
        """Words that say something: not backchannels, filler or the agent's own echo."""
        skip = self.config.backchannels | FUNCTION_WORDS
        return [w for w in words(text) if w not in skip and w not in self._agent_words]

    def _wants_floor(self, text: str) -> bool:
        ws = words(text)
        if any(w in INTENT_WORDS and w not in self._agent_words for w in ws):
            return True
        return len(self.content_words(text)) >= self.config.barge_in_min_words

    def _confirmed_by_length(self, utt: Utterance, voiced: bool) -> bool:
        """Voiced speech long enough to interrupt, or the frame that makes the words heard
        so far count (a "wait" transcribed before `barge_in_min_speech_ms` were voiced)."""
        cfg = self.config
        if utt.voiced_ms >= cfg.barge_in_confirm_ms and not self._dismissable(utt.text):
            return True
        crossed = voiced and 0 <= utt.voiced_ms - cfg.barge_in_min_speech_ms < cfg.frame_ms
        return crossed and bool(utt.text) and self._wants_floor(utt.text)

    def _dismissable(self, text: str) -> bool:
        """A transcript so far that is only backchannel, filler or echo (empty = not known):
        such speech never interrupts by its length alone."""
        return bool(words(text)) and not self._wants_floor(text) and not self.content_words(text)

    def _speculate(self, utt: Utterance, text: str) -> list[Act]:
        """In a pause of a turn (not a candidate): hold a reply to `text`, replacing one
        held for other words."""
        if utt.candidate or not self.config.speculative_reply or not words(text):
            return []
        if utt.speculated is not None and words(utt.speculated) == words(text):
            return []
        acts = [Act.DROP_SPECULATION] if utt.speculated is not None else []
        utt.speculated = text
        return [*acts, Act.SPECULATE]

    def _end(self, utt: Utterance) -> Act:
        utt.ended = True
        self.current = utt if utt.speculated is not None else None
        return Act.END_TURN

    def _yield_floor(self, utt: Utterance, voiced: bool, silence_ms: float) -> list[Act]:
        """How much of the floor a candidate gets, frame by frame: the reply is ducked
        while the caller's voice is on, loud again when it stops for a moment, and paused
        once the candidate has lasted long enough to be more than a sound."""
        cfg = self.config
        if cfg.barge_in_pause and not utt.paused and utt.voiced_ms >= cfg.barge_in_pause_ms:
            utt.paused = True
            utt.ducked = False
            return [Act.PAUSE_REPLY]
        if utt.paused or not cfg.barge_in_duck:
            return []
        if voiced and not utt.ducked:
            utt.ducked = True
            return [Act.DUCK_REPLY]
        if utt.ducked and silence_ms >= cfg.duck_release_ms:
            utt.ducked = False
            return [Act.RESUME_REPLY]
        return []

    @staticmethod
    def _confirm(utt: Utterance) -> list[Act]:
        utt.confirmed = True
        utt.paused = False
        utt.ducked = False
        return [Act.INTERRUPT]

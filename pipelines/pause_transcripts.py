"""Early transcripts of the caller's pauses, for speculative replies (and of speech over
the agent, which may be an interruption: `hurry`).

A recogniser that can transcribe the utterance so far (Whisper's `speculate`) is asked
once per pause, as soon as the pause lasts `after_ms`, and the request is called off
(`unspeculate`) when the caller goes on. The transcript arrives as an interim, on which
the floor may start a held reply before the turn has ended. A recogniser without
`speculate` streams its interims anyway: for it this does nothing.
"""

from __future__ import annotations

from collections.abc import Callable


class PauseTranscripts:
    __slots__ = ("_after_ms", "_asked", "_hurry", "_speculate", "_stream", "_unspeculate")

    def __init__(self, stream: object, after_ms: float) -> None:
        self._stream = stream
        self._speculate: Callable[[], None] | None = getattr(stream, "speculate", None)
        self._unspeculate: Callable[[], None] | None = getattr(stream, "unspeculate", None)
        self._hurry: Callable[[float], None] | None = getattr(stream, "hurry", None)
        self._after_ms = after_ms
        self._asked = False

    @property
    def supported(self) -> bool:
        return self._speculate is not None

    @property
    def streaming(self) -> bool:
        """The recogniser in use now sends its interims as it hears (no `speculate`, or a
        chain whose active member has none): its final transcript is a round trip away."""
        return not self.transcribed_now

    @property
    def transcribed_now(self) -> bool | None:
        """The recogniser in use now transcribes pauses; None when that cannot be told
        (a chain with no member open yet)."""
        value: bool | None = getattr(self._stream, "transcribes_pauses", self.supported)
        return value

    def frame(self, silence_ms: float) -> None:
        """One speech frame of the utterance, `silence_ms` into a pause (0: voiced)."""
        if self._speculate is None:
            return
        if silence_ms >= self._after_ms:
            if not self._asked:
                self._asked = True
                self._speculate()
        elif self._asked and silence_ms == 0:
            self._asked = False
            if self._unspeculate is not None:
                self._unspeculate()

    def hurry(self, interval: float) -> None:
        """Transcribe the utterance that just began every `interval` s (until it ends)."""
        if self._hurry is not None:
            self._hurry(interval)

    def reset(self) -> None:
        """A new utterance, or the end of one: no pause is being transcribed."""
        self._asked = False

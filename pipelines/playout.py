"""Real-time pacing of reply audio, and what the listener has actually heard.

Audio is released at most `lead` seconds ahead of the listener's playhead, so that a
barge-in stops the agent within that lead and the remembered reply is the part that was
played. Pure bookkeeping: the caller passes the clock in.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Playout:
    lead: float = 0.3
    #: When the audio released so far will have finished playing (listener's clock).
    playhead: float = 0.0
    #: Seconds of reply audio released to the listener so far.
    released: float = 0.0
    #: Seconds of reply audio synthesized so far (>= released).
    synthesized: float = 0.0
    #: [start, end, text] per spoken piece on the reply's audio timeline.
    pieces: list[list[object]] = field(default_factory=list)
    #: Seconds the listener's player has acknowledged playing (Twilio marks); None = the
    #: transport cannot tell, so the playhead estimate is used.
    acked: float | None = None
    #: Paused (protocol v1.1 `pause`): seconds of released audio the listener holds unplayed
    #: (None: playing). The playhead stands still until `resume`.
    held: float | None = None
    #: Ducked (`duck`): how much the listener had heard when the reply went quiet (None: not
    #: ducked). If the duck ends in an interruption, what played quietly under the
    #: caller's voice was not heard.
    ducked_heard: float | None = None

    def start_piece(self, text: str) -> None:
        self.pieces.append([self.synthesized, self.synthesized, text])

    def add_synthesized(self, seconds: float) -> None:
        self.synthesized += seconds
        if self.pieces:
            self.pieces[-1][1] = self.synthesized

    def wait_before(self, now: float) -> float:
        """Seconds to wait before releasing the next chunk (0 = release now)."""
        if self.held is not None:  # paused: the listener holds whatever comes
            return 0.0
        if self.playhead < now:  # first chunk, or an underrun: playback (re)starts now
            self.playhead = now
        return max(0.0, self.playhead - now - self.lead)

    def release(self, seconds: float) -> None:
        self.released += seconds
        if self.held is not None:  # sent while paused: the listener holds it too
            self.held += seconds
        else:
            self.playhead += seconds

    def heard_seconds(self, now: float) -> float:
        unplayed = self.held if self.held is not None else max(0.0, self.playhead - now)
        estimate = max(0.0, self.released - unplayed)
        return estimate if self.acked is None else min(estimate, self.acked)

    # ------------------------------------------------------ a candidate barge-in
    @property
    def paused(self) -> bool:
        return self.held is not None

    def duck(self, now: float) -> None:
        if self.ducked_heard is None:
            self.ducked_heard = self.heard_seconds(now)

    def pause(self, now: float) -> bool:
        """The listener's playback stops now; False if it already was."""
        if self.held is not None:
            return False
        self.held = max(0.0, self.playhead - now)
        return True

    def resume(self, now: float) -> bool:
        """Full volume, and playing again from where it paused; False if it was neither
        paused nor ducked."""
        was = self.held is not None or self.ducked_heard is not None
        if self.held is not None:
            self.playhead = now + self.held
            self.held = None
        self.ducked_heard = None
        return was

    def heard_when_cut(self, now: float) -> float:
        """What the listener heard of a reply interrupted at `now`: not what played ducked
        under the caller's voice."""
        heard = self.heard_seconds(now)
        return heard if self.ducked_heard is None else min(heard, self.ducked_heard)

    def heard_text(self, now: float, *, cut: bool = False) -> str:
        """Whole pieces that finished playing, plus the played share of the current one
        (`cut`: the reply is being interrupted, see `heard_when_cut`)."""
        heard = self.heard_when_cut(now) if cut else self.heard_seconds(now)
        out: list[str] = []
        for start, end, text in self.pieces:
            assert isinstance(start, float) and isinstance(end, float) and isinstance(text, str)
            if heard >= end - 1e-6:
                out.append(text)
                continue
            if heard > start and end > start:
                words = text.split()
                n = int(len(words) * (heard - start) / (end - start))
                if n:
                    out.append(" ".join(words[:n]))
            break
        return " ".join(out)

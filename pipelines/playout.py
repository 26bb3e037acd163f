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

    def start_piece(self, text: str) -> None:
        self.pieces.append([self.synthesized, self.synthesized, text])

    def add_synthesized(self, seconds: float) -> None:
        self.synthesized += seconds
        if self.pieces:
            self.pieces[-1][1] = self.synthesized

    def wait_before(self, now: float) -> float:
        """Seconds to wait before releasing the next chunk (0 = release now)."""
        if self.playhead < now:  # first chunk, or an underrun: playback (re)starts now
            self.playhead = now
        return max(0.0, self.playhead - now - self.lead)

    def release(self, seconds: float) -> None:
        self.playhead += seconds
        self.released += seconds

    def heard_seconds(self, now: float) -> float:
        estimate = max(0.0, self.released - max(0.0, self.playhead - now))
        return estimate if self.acked is None else min(estimate, self.acked)

    def heard_text(self, now: float) -> str:
        """Whole pieces that finished playing, plus the played share of the current one."""
        heard = self.heard_seconds(now)
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

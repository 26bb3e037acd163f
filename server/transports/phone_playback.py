"""Duck, pause and resume (protocol v1.1) on a phone line, which knows only `media`,
`mark` and `clear`.

Twilio plays what it is sent, in order; a `mark` comes back when the audio before it has
played; `clear` drops everything not yet played and sends the pending marks back at once.
So, for the reply being played:

* **duck**: `clear`, and the audio not yet acknowledged sent again, quieter; what follows
  is sent quieter too;
* **pause**: `clear`; what is not acknowledged is kept here, and what the session still
  sends is kept too;
* **resume**: `clear` (if ducked), and everything not acknowledged sent again at full
  volume, from the last acknowledged mark: a dismissed "mhm" costs a dip, at most one
  chunk is heard twice, and nothing of the reply is lost.

Every `clear` starts a new generation of mark names (`t<turn>-<ms>.<generation>`; the first
generation has no suffix), so the marks Twilio hands back for cleared audio are not taken
for audio played. Pure bookkeeping: it returns what to send, the transport sends it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from audio.pcm import gain_db_to_factor, scale

RATE = 8000


@dataclass(frozen=True, slots=True)
class Clear:
    """Send `clear`."""


@dataclass(frozen=True, slots=True)
class Media:
    """Send this audio (PCM16, 8 kHz), then a mark named `mark`."""

    pcm: bytes
    mark: str


@dataclass(frozen=True, slots=True)
class Mark:
    """Send a mark named `mark` (the end of a reply)."""

    mark: str


Out = Clear | Media | Mark


@dataclass(slots=True)
class _Chunk:
    end_ms: float
    pcm: bytes


class PhonePlayback:
    def __init__(self) -> None:
        self.turn = -1
        self.generation = 0
        self._unheard: deque[_Chunk] = deque()
        self._sent_ms = 0.0
        self._gain = 1.0
        self._paused = False
        self._ended = False

    # ------------------------------------------------------------------ the reply
    def audio(self, turn_id: int, pcm: bytes) -> list[Out]:
        if turn_id != self.turn:
            self._new_turn(turn_id)
        self._sent_ms += len(pcm) / 2 / RATE * 1000
        chunk = _Chunk(self._sent_ms, pcm)
        self._unheard.append(chunk)
        return [] if self._paused else [self._media(chunk)]

    def end(self, turn_id: int) -> list[Out]:
        """The reply's last audio was sent: its end mark follows it."""
        if turn_id != self.turn:
            return [Mark(self._name(turn_id, "end"))]
        self._ended = True
        return [] if self._paused else [Mark(self._name(turn_id, "end"))]

    def acked(self, turn_id: int, position: str, generation: int) -> bool:
        """Twilio returned a mark: True if it means audio played (not a cleared mark)."""
        if generation != self.generation:
            return False
        if turn_id == self.turn and position != "end":
            ms = float(position)
            while self._unheard and self._unheard[0].end_ms <= ms + 0.5:
                self._unheard.popleft()
        return True

    # --------------------------------------------------------- a candidate barge-in
    def duck(self, turn_id: int, gain_db: float) -> list[Out]:
        if turn_id != self.turn:
            self._new_turn(turn_id)
        self._gain = gain_db_to_factor(gain_db)
        if self._paused:
            return []
        return self._resend()

    def pause(self, turn_id: int) -> list[Out]:
        if turn_id != self.turn or self._paused:
            return []
        self._paused = True
        self.generation += 1
        return [Clear()]

    def resume(self, turn_id: int) -> list[Out]:
        if turn_id != self.turn or (not self._paused and self._gain == 1.0):
            return []
        self._paused = False
        self._gain = 1.0
        return self._resend()

    def interrupted(self, turn_id: int) -> None:
        """The reply was cut (the transport sends `clear`): nothing of it is sent again."""
        if turn_id == self.turn:
            self._new_turn(-1)
        self.generation += 1

    # ------------------------------------------------------------------- internals
    def _resend(self) -> list[Out]:
        self.generation += 1
        out: list[Out] = [Clear()]
        out.extend(self._media(chunk) for chunk in self._unheard)
        if self._ended:
            out.append(Mark(self._name(self.turn, "end")))
        return out

    def _media(self, chunk: _Chunk) -> Media:
        return Media(scale(chunk.pcm, self._gain), self._name(self.turn, str(round(chunk.end_ms))))

    def _name(self, turn_id: int, position: str) -> str:
        suffix = f".{self.generation}" if self.generation else ""
        return f"t{turn_id}-{position}{suffix}"

    def _new_turn(self, turn_id: int) -> None:
        self.turn = turn_id
        self._unheard.clear()
        self._sent_ms = 0.0
        self._gain = 1.0
        self._paused = False
        self._ended = False

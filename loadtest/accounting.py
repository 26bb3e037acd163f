"""What a caller measured, as plain data: turns, reply playback, percentiles.

Pure bookkeeping with times passed in (no clocks, no sockets), so the numbers in a report
can be checked against a server whose delays are known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Cushion the browser player (server/static/player.js) adds when playback (re)starts.
PLAYER_START_LEAD_S = 0.06


@dataclass(slots=True)
class PlayerModel:
    """The browser player's schedule for one reply, fed with arrival times.

    Every chunk is scheduled to start where the previous one ends; a chunk that arrives
    after that moment is a gap the listener hears (an underrun), and playback restarts
    `start_lead` after its arrival, as `ReplyPlayer.push` does.
    """

    rate: int
    start_lead: float = PLAYER_START_LEAD_S
    next_time: float = 0.0
    chunks: int = 0
    seconds: float = 0.0
    underruns: int = 0
    gap_s: float = 0.0

    def push(self, now: float, nbytes: int) -> None:
        duration = nbytes / 2 / self.rate
        if self.next_time < now:
            if self.chunks:
                self.underruns += 1
                self.gap_s += now + self.start_lead - self.next_time
            self.next_time = now + self.start_lead
        self.next_time += duration
        self.chunks += 1
        self.seconds += duration


@dataclass(slots=True)
class Turn:
    """One user turn: when its last speech frame left, and what came back."""

    speech_end: float
    #: When the frame that should end the turn at the server left (speech end + VAD
    #: hangover + endpointing silence), for the cross-check of the VAD's share.
    endpoint_frame: float | None = None
    vad_end: float | None = None
    first_audio: float | None = None
    audio_end: float | None = None
    player: PlayerModel | None = None
    interrupted: bool = False

    @property
    def latency(self) -> float | None:
        return None if self.first_audio is None else self.first_audio - self.speech_end


@dataclass(slots=True)
class CallerTally:
    """Counts for one caller over one step (merged over callers for the step report)."""

    turns: list[Turn] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    disconnects: int = 0
    close_codes: dict[int, int] = field(default_factory=dict)
    connect_failures: int = 0
    frames_sent: int = 0
    messages_in: int = 0
    audio_bytes_in: int = 0
    unmeasured_audio: int = 0

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of the values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class LatenessHistogram:
    """Send-pacing lateness in 0.1 ms buckets up to 1 s: percentiles without keeping
    every sample of every frame of every caller."""

    __slots__ = ("buckets", "count", "max")

    RES = 1e-4
    N = 10001

    def __init__(self) -> None:
        self.buckets = [0] * self.N
        self.count = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        i = int(seconds / self.RES) if seconds > 0 else 0
        self.buckets[i if i < self.N else self.N - 1] += 1
        self.count += 1
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: LatenessHistogram) -> None:
        for i, n in enumerate(other.buckets):
            if n:
                self.buckets[i] += n
        self.count += other.count
        self.max = max(self.max, other.max)

    def percentile(self, q: float) -> float | None:
        if not self.count:
            return None
        target = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for i, n in enumerate(self.buckets):
            seen += n
            if seen >= target:
                return (i + 1) * self.RES  # upper edge: never flatters the pacing
        return self.max

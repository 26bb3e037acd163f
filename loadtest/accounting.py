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


@dataclass(slots=True)
class Segment:
    """A stretch of agent audio the listener hears, on the listener's clock."""

    start: float
    end: float
    gain_db: float = 0.0
    #: The reply (turn) it belongs to.
    tag: int = 0

    @property
    def seconds(self) -> float:
        return self.end - self.start


class PlayerTimeline:
    """When each piece of reply audio plays for the listener, under protocol 1.1.

    Fed with arrival times like `PlayerModel` (audio chained gaplessly, `start_lead` after
    an arrival that finds the player idle) and with the yields the listener is told of, as
    server/static/player.js carries them out: `duck` plays on `gain_db` quieter, `pause`
    stops at once and holds every unplayed sample (audio arriving meanwhile is held too),
    `resume` plays the held audio from where it stopped at full volume, `stop`
    (`interrupted`) drops everything not played and the rest of that turn. `clear` is the
    phone's: what was not played is dropped, and audio sent after it plays as it comes.
    """

    def __init__(self, start_lead: float = PLAYER_START_LEAD_S) -> None:
        self.start_lead = start_lead
        self.segments: list[Segment] = []
        #: Where the next audio goes on the timeline (-inf: the player is idle).
        self.next_time = -math.inf
        self.gain_db = 0.0
        self.paused = False
        #: (seconds, tag) not played yet while paused, in order.
        self.held: list[tuple[float, int]] = []
        self.tag = 0
        self.stopped_tag: int | None = None
        self.yield_tag: int | None = None
        #: Seconds of audio that arrived and will never play (stopped, cleared, released).
        self.dropped = 0.0
        self.received: dict[int, float] = {}

    # ---------------------------------------------------------------------- audio
    def begin(self, now: float, tag: int) -> None:
        """`audio_start` of turn `tag`: a new turn forgets audio held for another one."""
        if tag != self.yield_tag:
            self.yield_tag = None
            self.dropped += sum(s for s, _ in self.held)
            self.held = []
            self.paused = False
            if self.gain_db != 0.0:
                self._set_gain(now, 0.0)
        self.tag = tag

    def push(self, now: float, seconds: float, tag: int | None = None) -> None:
        tag = self.tag if tag is None else tag
        self.received[tag] = self.received.get(tag, 0.0) + seconds
        if tag == self.stopped_tag:
            self.dropped += seconds
            return
        if self.paused:
            self.held.append((seconds, tag))
            return
        self._schedule(now, seconds, tag, lead=True)

    # ---------------------------------------------------------------------- yields
    def duck(self, now: float, gain_db: float, tag: int | None = None) -> None:
        self.yield_tag = tag
        self._set_gain(now, gain_db)

    def pause(self, now: float, tag: int | None = None) -> None:
        self.yield_tag = tag
        if self.paused:
            return
        self.paused = True
        self.held = self._cut(now) + self.held
        self.next_time = -math.inf

    def resume(self, now: float, tag: int | None = None) -> None:
        if tag is not None and tag not in (self.yield_tag, self.tag):
            return
        self._set_gain(now, 0.0)
        if not self.paused:
            return
        self.paused = False
        held, self.held = self.held, []
        self.next_time = now
        for seconds, t in held:
            self._schedule(now, seconds, t, lead=False)

    def stop(self, now: float) -> None:
        """`interrupted`: silence now, forget the held audio and the rest of this turn."""
        self.dropped += sum(s for s, _ in self._cut(now)) + sum(s for s, _ in self.held)
        self.held = []
        self.paused = False
        self.yield_tag = None
        if self.gain_db != 0.0:
            self._set_gain(now, 0.0)
        self.stopped_tag = self.tag
        self.next_time = -math.inf

    def clear(self, now: float) -> None:
        """The phone's `clear`: drop what has not played; later audio plays as it comes."""
        self.dropped += sum(s for s, _ in self._cut(now))
        self.next_time = now

    # --------------------------------------------------------------------- reading
    def heard(self, tag: int | None = None, until: float = math.inf) -> float:
        """Seconds of audio (of turn `tag`, or all) played by `until`."""
        return sum(
            max(0.0, min(s.end, until) - s.start)
            for s in self.segments
            if tag is None or s.tag == tag
        )

    def ducked(self, start: float = -math.inf, end: float = math.inf) -> float:
        """Seconds played quieter than full volume within [start, end]."""
        return sum(
            max(0.0, min(s.end, end) - max(s.start, start))
            for s in self.segments
            if s.gain_db < 0.0
        )

    def end(self, tag: int | None = None) -> float | None:
        """When the last scheduled audio (of turn `tag`) stops playing (None: none)."""
        ends = [s.end for s in self.segments if tag is None or s.tag == tag]
        return max(ends) if ends else None

    def silences(self, start: float, end: float) -> list[tuple[float, float]]:
        """The stretches within [start, end] with no agent audio playing (a ducked stretch
        plays, quieter), in order."""
        out: list[tuple[float, float]] = []
        cursor = start
        for s in sorted(self.segments, key=lambda s: s.start):
            if cursor >= end or s.start >= end:
                break
            if s.end <= cursor:
                continue
            if s.start > cursor:
                out.append((cursor, s.start))
            cursor = s.end
        if cursor < end:
            out.append((cursor, end))
        return out

    def longest_silence(self, start: float, end: float) -> float:
        """The longest of `silences(start, end)` (0 when there is none)."""
        return max((b - a for a, b in self.silences(start, end)), default=0.0)

    # ------------------------------------------------------------------- internals
    def _schedule(self, now: float, seconds: float, tag: int, *, lead: bool) -> None:
        if self.next_time < now:
            self.next_time = now + (self.start_lead if lead else 0.0)
        start = self.next_time
        self.next_time += seconds
        self.segments.append(Segment(start, self.next_time, self.gain_db, tag))

    def _cut(self, now: float) -> list[tuple[float, int]]:
        """Stop everything at `now`; the unplayed (seconds, tag), in order."""
        kept: list[Segment] = []
        unplayed: list[tuple[float, int]] = []
        for s in self.segments:
            if s.end <= now:
                kept.append(s)
            elif s.start >= now:
                unplayed.append((s.seconds, s.tag))
            else:
                unplayed.append((s.end - now, s.tag))
                kept.append(Segment(s.start, now, s.gain_db, s.tag))
        self.segments = kept
        return _merge(unplayed)

    def _set_gain(self, now: float, gain_db: float) -> None:
        """From `now` on, what plays (and what is scheduled) plays at `gain_db`."""
        self.gain_db = gain_db
        out: list[Segment] = []
        for s in self.segments:
            if s.end <= now:
                out.append(s)
            elif s.start >= now:
                out.append(Segment(s.start, s.end, gain_db, s.tag))
            else:
                out.append(Segment(s.start, now, s.gain_db, s.tag))
                out.append(Segment(now, s.end, gain_db, s.tag))
        self.segments = out


def _merge(pieces: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """Adjacent pieces of one turn as one."""
    out: list[tuple[float, int]] = []
    for seconds, tag in pieces:
        if out and out[-1][1] == tag:
            out[-1] = (out[-1][0] + seconds, tag)
        else:
            out.append((seconds, tag))
    return out

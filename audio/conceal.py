"""Packet-loss concealment for a stream of fixed-size PCM16 frames with RTP timestamps.

Sans-I/O: frames and their timestamps are passed in, filler comes out. A lost packet is a
gap in the timestamps; spliced shut, the speech around it would run together and a
recogniser mishears whole words, and the silence that ends a turn would be measured short.
So each missing frame is filled, keeping the stream's length and clock.

The gap is found when the frame after it arrives, so the filler is built from both sides:
the sound before the gap continued forward one pitch period at a time, cross-faded into the
sound after it continued backward the same way. A gap shorter than twice `RAMP_FRAMES` is
one cross-fade from the one to the other; in a longer one each side fades over
`RAMP_FRAMES` and the middle is silence (a voice repeated for long sounds like a machine).
A gap longer than `MAX_FRAMES` (a peer that paused sending) is not filled, and neither is
one before a frame that comes late: a frame up to `MAX_FRAMES` behind the clock is late and
leaves the clock alone; one further back is a stream that started again, and the clock
follows it (a stream that starts again less than that far back goes unconcealed until it
catches up: its audio still passes).
"""

from __future__ import annotations

import numpy as np

RAMP_FRAMES = 3
MAX_FRAMES = 50
HIGHEST_PITCH_HZ = 400
LOWEST_PITCH_HZ = 80
SEARCH_RATE = 12000


def pitch_period(x: np.ndarray, rate: int) -> int:
    """The lag, in samples, at which the end of `x` best matches `x` earlier (the highest
    normalised correlation between the last stretch and the stretch one lag before it),
    searched between 2.5 ms and 12.5 ms (400 Hz to 80 Hz), and within what `x` holds.
    Found at about 12 kHz (neighbours summed), then refined at `rate` around that. Of
    equally good lags the longest wins (a steady tone's period may come back doubled,
    which repeats it just as well)."""
    n = len(x)
    shortest = max(1, rate // HIGHEST_PITCH_HZ)
    longest = min(rate // LOWEST_PITCH_HZ, n - n // 3)
    if longest <= shortest:
        return max(1, n)
    step = max(1, rate // SEARCH_RATE)
    if step == 1:
        return _best_lag(x, shortest, longest, n - longest)
    coarse = x[n % step :].reshape(-1, step).sum(axis=1)
    found = _best_lag(coarse, max(1, shortest // step), longest // step, (n - longest) // step)
    found *= step
    low, high = max(shortest, found - step), min(longest, found + step)
    return _best_lag(x, low, high, n - longest)


def _best_lag(x: np.ndarray, shortest: int, longest: int, span: int) -> int:
    """The lag in shortest..longest at which the stretch of `x` that many samples earlier
    best matches its last `span` samples (normalised correlation)."""
    n = len(x)
    tail = x[n - span :]
    # Entry j compares the stretch that starts j samples into `seg`: lag longest - j.
    seg = x[n - span - longest : n - shortest]
    dots = np.correlate(seg, tail, "valid")
    squares = np.concatenate(([0.0], np.cumsum(seg * seg)))
    energy = squares[span:] - squares[:-span]
    return longest - int(np.argmax(dots / np.sqrt(np.maximum(energy, 1e-9))))


def continue_forward(x: np.ndarray, count: int, rate: int) -> np.ndarray:
    """`count` samples carrying on from the end of `x`, its last pitch period repeated."""
    return np.resize(x[-pitch_period(x, rate) :], count)


class Concealment:
    """Fills the gaps in one stream of PCM16 frames (see the module's docstring).

    `before(pts, samples, pcm)` takes each frame as it arrives, with its RTP timestamp and
    its length in RTP samples, and returns the filler frames to play before it (usually
    none). `filled` counts the frames filled so far."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.filled = 0
        self._next_pts: int | None = None
        self._last = b""

    def before(self, pts: int | None, samples: int, pcm: bytes) -> list[bytes]:
        missing = self._missing(pts, samples)
        last, self._last = self._last, pcm
        if not missing or len(pcm) < 2:
            return []
        self.filled += missing
        return self._fill(_samples(last), _samples(pcm), missing)

    def _missing(self, pts: int | None, samples: int) -> int:
        """How many frames are missing before the frame at `pts` (late, repeated, on time,
        or after too long a gap to fill: none)."""
        if pts is None or samples <= 0:
            return 0
        expected = self._next_pts
        gap = 0 if expected is None else (pts - expected) % 2**32
        if gap >= 2**31 and 2**32 - gap <= MAX_FRAMES * samples:
            return 0  # late: the clock stays where the stream is
        self._next_pts = (pts + samples) % 2**32
        if expected is None or gap >= 2**31 or gap < samples:
            return 0  # the first, or on time, or far back (the stream restarted)
        missing = gap // samples
        return missing if missing <= MAX_FRAMES else 0

    def _fill(self, before: np.ndarray, after: np.ndarray, missing: int) -> list[bytes]:
        size = len(after)
        total = missing * size
        if len(before) != size:
            before = np.zeros(size)
        forward = continue_forward(before, total, self.rate)
        backward = continue_forward(after[::-1], total, self.rate)[::-1]
        ramp = total if missing < 2 * RAMP_FRAMES else RAMP_FRAMES * size
        t = np.arange(total) + 0.5
        fade_out = np.clip(1.0 - t / ramp, 0.0, 1.0)
        fade_in = np.clip(1.0 - (total - t) / ramp, 0.0, 1.0)
        filler = (forward * fade_out + backward * fade_in).clip(-32768, 32767).astype("<i2")
        return [filler[i * size : (i + 1) * size].tobytes() for i in range(missing)]


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2).astype(np.float64)

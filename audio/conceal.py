"""Packet-loss concealment for a stream of fixed-size PCM16 frames with RTP timestamps.

Sans-I/O: frames and their timestamps are passed in, filler comes out. A lost packet is a
gap in the timestamps; spliced shut, the speech around it would run together and a
recogniser mishears whole words, and the silence that ends a turn would be measured short.
So each missing frame is filled, keeping the stream's length and clock.

The frame after the gap is already here when the gap is found (a jitter buffer hands a frame
over only once later ones have arrived), so the filler is built from both sides: the sound
before the gap continued forward one pitch period at a time, cross-faded into the sound
after it continued backward the same way. A short gap (up to `RAMP_FRAMES`) is a cross-fade
from one to the other; in a longer one each side fades over `RAMP_FRAMES` and the middle is
silence (repeating a voice for long sounds like a machine). A gap longer than `MAX_FRAMES`
(a peer that paused sending) is not filled.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

RAMP_FRAMES = 3
MAX_FRAMES = 50
HIGHEST_PITCH_HZ = 400
LOWEST_PITCH_HZ = 80


def pitch_period(x: np.ndarray, rate: int) -> int:
    """The lag, in samples, at which the end of `x` best matches `x` earlier (the highest
    normalised correlation between the last stretch and the stretch one lag before it),
    searched between 2.5 ms and 12.5 ms (400 Hz to 80 Hz), and within what `x` holds."""
    n = len(x)
    shortest = max(1, rate // HIGHEST_PITCH_HZ)
    longest = min(rate // LOWEST_PITCH_HZ, n - n // 3)
    if longest <= shortest:
        return max(1, n)
    span = n - longest  # the stretch compared, the last `span` samples
    tail = x[n - span :]
    # Row i is the stretch that starts i samples in: lag n - span - i.
    earlier = sliding_window_view(x[: n - shortest], span)
    dots = earlier @ tail
    energy = np.einsum("ij,ij->i", earlier, earlier) * float(tail @ tail)
    score = dots / np.sqrt(energy + 1e-9)
    return n - span - int(np.argmax(score))


def continue_forward(x: np.ndarray, count: int, rate: int) -> np.ndarray:
    """`count` samples carrying on from the end of `x`, its last pitch period repeated."""
    period = pitch_period(x, rate)
    cycle = x[-period:]
    return np.tile(cycle, -(-count // period))[:count]


class Concealment:
    """Fills the gaps in one stream of PCM16 frames (see the module's docstring).

    `before(pts, samples, pcm)` takes each frame as it arrives, with its RTP timestamp and
    its length in RTP samples, and returns the filler frames to play before it (usually
    none). `filled` counts the frames filled so far."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.filled = 0
        self._next_pts: int | None = None
        self._last: np.ndarray | None = None

    def before(self, pts: int | None, samples: int, pcm: bytes) -> list[bytes]:
        frame = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        try:
            missing = self._missing(pts, samples)
            if not missing or not len(frame):
                return []
            self.filled += missing
            return self._fill(frame, missing)
        finally:
            self._last = frame

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

    def _fill(self, after: np.ndarray, missing: int) -> list[bytes]:
        size = len(after)
        total = missing * size
        before = self._last
        if before is None or len(before) != size:
            before = np.zeros(size)
        forward = continue_forward(before, total, self.rate)
        backward = continue_forward(after[::-1], total, self.rate)[::-1]
        ramp = min(missing, RAMP_FRAMES) * size
        t = np.arange(total) + 0.5
        fade_out = np.clip(1.0 - t / ramp, 0.0, 1.0)
        fade_in = np.clip(1.0 - (total - t) / ramp, 0.0, 1.0)
        filler = (forward * fade_out + backward * fade_in).clip(-32768, 32767).astype("<i2")
        return [filler[i * size : (i + 1) * size].tobytes() for i in range(missing)]

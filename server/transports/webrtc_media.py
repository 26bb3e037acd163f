"""The media side of the WebRTC transport, on aiortc and PyAV: what comes in (a jitter
buffer that gives a lost packet up, decoded frames mixed down to mono) and what goes out
(`ReplyTrack`: the reply's PCM in 20 ms frames on the media clock, paused, ducked and
dropped as protocol 1.1 says). aiortc and PyAV are imported when first used.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from audio.pcm import gain_db_to_factor, scale

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

log = logging.getLogger(__name__)

#: Opus runs at 48 kHz: the session takes and gives audio at that rate.
RATE = 48000
FRAME_SAMPLES = RATE // 50  # 20 ms
FRAME_BYTES = FRAME_SAMPLES * 2

_JITTER = "_RTCRtpReceiver__jitter_buffer"


def skip_lost_packets(pc: RTCPeerConnection) -> None:
    """Give each audio receiver a jitter buffer that gives a lost packet up.

    aiortc's audio jitter buffer (16 packets, 4 prefetched) hands a frame over only when
    the 4 behind it have all arrived: after a lost packet it waits until 16 have piled up,
    then makes room by dropping the oldest, one per arrival, so every lost packet costs
    about a dozen more (5% loss became a quarter of the audio). This one skips the hole
    as soon as 4 positions are behind it, and `Concealment` fills it. aiortc keeps the
    buffer in a private attribute: on a version without it, aiortc's own stays (with a
    warning), and the loss test in tests/integration/test_webrtc.py fails."""
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        if transceiver.kind != "audio":
            continue
        if not hasattr(receiver, _JITTER):
            log.warning("webrtc: this aiortc has no audio jitter buffer to replace")
            continue
        setattr(receiver, _JITTER, jitter_buffer_class()(capacity=16, prefetch=4))


_JITTER_BUFFER: type | None = None


def jitter_buffer_class() -> type:
    global _JITTER_BUFFER
    if _JITTER_BUFFER is not None:
        return _JITTER_BUFFER
    from aiortc.jitterbuffer import JitterBuffer, JitterFrame
    from aiortc.utils import uint16_add

    class LossTolerantJitterBuffer(JitterBuffer):  # type: ignore[misc]
        """One Opus packet is one frame: the oldest is handed over once `prefetch`
        positions are behind it, and a position still empty by then is a lost packet."""

        def _remove_frame(self, sequence_number: int) -> Any:
            behind = uint16_add(sequence_number, -self._origin)
            while behind >= self._prefetch and behind < 0x8000:
                pos = self._origin % self._capacity
                packet = self._packets[pos]
                self._packets[pos] = None
                self._origin = uint16_add(self._origin, 1)
                behind -= 1
                if packet is not None:
                    return JitterFrame(data=packet._data, timestamp=packet.timestamp)
            return None

    _JITTER_BUFFER = LossTolerantJitterBuffer
    return LossTolerantJitterBuffer


def mono_s16(frame: Any) -> bytes:
    """A decoded frame as PCM16 mono (aiortc decodes Opus to packed s16 stereo)."""
    samples = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.name != "s16":
        raise ValueError(f"unexpected sample format {frame.format.name}")
    flat = samples.reshape(-1)
    if channels == 1:
        return flat.tobytes()
    wide = flat.reshape(-1, channels).astype(np.int32)
    return (wide.sum(axis=1) // channels).astype("<i2").tobytes()


_REPLY_TRACK: type | None = None


def reply_track_class() -> type:
    """The agent's voice as an aiortc audio track (built on first use: aiortc is loaded
    lazily)."""
    global _REPLY_TRACK
    if _REPLY_TRACK is not None:
        return _REPLY_TRACK
    import av
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError

    time_base = fractions.Fraction(1, RATE)
    silence = bytes(FRAME_BYTES)

    class ReplyTrack(MediaStreamTrack):  # type: ignore[misc]
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self._queue = bytearray()
            self._dropped: set[int] = set()
            self._start = 0.0
            self._pts = -1
            #: Protocol v1.1 on the server's side of the track: the browser plays what
            #: the track carries, so ducking and pausing happen here, frame by frame.
            self._gain = 1.0
            self._paused = False
            self._turn = -1

        def play(self, turn_id: int, pcm: bytes) -> None:
            if turn_id in self._dropped:
                return
            if turn_id != self._turn:  # a new reply: not ducked or paused by the last one
                self._turn = turn_id
                self._gain = 1.0
                self._paused = False
            self._queue += pcm

        def duck(self, turn_id: int, gain_db: float) -> None:
            self._turn = turn_id  # (its audio may not have come yet)
            self._gain = gain_db_to_factor(gain_db)

        def pause(self, turn_id: int) -> None:
            """Silence from the next frame on; what is queued waits for `resume`."""
            self._turn = turn_id
            self._paused = True

        def resume(self) -> None:
            self._paused = False
            self._gain = 1.0

        def drop(self, turn_id: int) -> None:
            """Barge-in: what is queued is not played, nor anything more of this turn."""
            self._queue.clear()
            self._paused = False
            self._gain = 1.0
            self._dropped.add(turn_id)
            if len(self._dropped) > 64:
                self._dropped = set(sorted(self._dropped)[-32:])

        @property
        def queued_s(self) -> float:
            return len(self._queue) / 2 / RATE

        async def recv(self) -> Any:
            if self.readyState != "live":
                raise MediaStreamError
            if self._pts < 0:
                self._start = time.monotonic()
                self._pts = 0
            else:
                self._pts += FRAME_SAMPLES
                wait = self._start + self._pts / RATE - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            queue = self._queue
            if queue and not self._paused:
                chunk = bytes(queue[:FRAME_BYTES])
                del queue[:FRAME_BYTES]
                if len(chunk) < FRAME_BYTES:
                    chunk += silence[len(chunk) :]
                if self._gain != 1.0:
                    chunk = scale(chunk, self._gain)
            else:
                chunk = silence
            frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
            frame.planes[0].update(chunk)
            frame.sample_rate = RATE
            frame.pts = self._pts
            frame.time_base = time_base
            return frame

    _REPLY_TRACK = ReplyTrack
    return ReplyTrack

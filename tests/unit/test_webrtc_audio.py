"""The WebRTC transport's audio-in repairs: lost packets are skipped by the jitter buffer
at once and concealed, so the session's audio keeps its length and its clock."""

from __future__ import annotations

import random

import numpy as np
import pytest

from server.transports.webrtc import FRAME_BYTES, FRAME_SAMPLES, Concealment

pytest.importorskip("aiortc")


def _run(buffer_cls: type, loss: float, n: int = 2000) -> tuple[int, int]:
    from aiortc.rtp import RtpPacket

    buffer = buffer_cls(capacity=16, prefetch=4)
    rnd = random.Random(7)
    sent = out = 0
    for seq in range(n):
        if rnd.random() < loss:
            continue
        sent += 1
        packet = RtpPacket(payload_type=111, sequence_number=seq % 65536, timestamp=seq * 960)
        packet._data = b"opus"
        if buffer.add(packet)[1] is not None:
            out += 1
    return sent, out


def test_the_jitter_buffer_loses_only_the_lost_packets() -> None:
    from aiortc.jitterbuffer import JitterBuffer

    from server.transports.webrtc import _jitter_buffer_class

    sent, out = _run(_jitter_buffer_class(), 0.05, n=70000)  # the sequence number wraps
    assert out >= sent - 4  # the last four are still prefetched
    sent, out = _run(JitterBuffer, 0.05)
    assert out < sent * 0.85  # aiortc's own drops a dozen behind every lost packet


def test_gaps_are_filled_fading_then_silent_and_long_ones_are_not() -> None:
    conceal = Concealment()
    loud = (np.full(FRAME_SAMPLES, 1000, dtype="<i2")).tobytes()
    assert conceal.before(1000, FRAME_SAMPLES, FRAME_BYTES) == []
    conceal.last = loud
    assert conceal.before(1000 + FRAME_SAMPLES, FRAME_SAMPLES, FRAME_BYTES) == []  # on time
    conceal.last = loud
    filled = conceal.before(1000 + 7 * FRAME_SAMPLES, FRAME_SAMPLES, FRAME_BYTES)
    peaks = [int(np.abs(np.frombuffer(f, dtype="<i2")).max()) for f in filled]
    assert peaks == [800, 500, 250, 0, 0] and conceal.filled == 5
    # A late packet, and a gap of several seconds (a peer that paused), are not filled.
    assert conceal.before(1000, FRAME_SAMPLES, FRAME_BYTES) == []
    conceal.before(2**32 - FRAME_SAMPLES, FRAME_SAMPLES, FRAME_BYTES)
    assert conceal.before(0, FRAME_SAMPLES, FRAME_BYTES) == []  # the timestamp wraps
    assert conceal.before(48000 * 5, FRAME_SAMPLES, FRAME_BYTES) == []

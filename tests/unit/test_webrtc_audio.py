"""The WebRTC transport's audio: lost packets are skipped by the jitter buffer at once (and
concealed, tests/unit/test_audio_conceal.py), and the reply track pauses, ducks and resumes."""

from __future__ import annotations

import random

import numpy as np
import pytest

from server.transports.webrtc_media import FRAME_SAMPLES

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

    from server.transports.webrtc_media import jitter_buffer_class

    sent, out = _run(jitter_buffer_class(), 0.05, n=70000)  # the sequence number wraps
    assert out >= sent - 4  # the last four are still prefetched
    sent, out = _run(JitterBuffer, 0.05)
    assert out < sent * 0.85  # aiortc's own drops a dozen behind every lost packet


async def test_the_reply_track_ducks_pauses_and_resumes_without_losing_a_sample() -> None:
    """Protocol 1.1 over WebRTC happens in the server's track: a pause sends silence and
    keeps the queue, a resume goes on from the next sample, a duck lowers by 24 dB."""
    from server.transports.webrtc_media import reply_track_class

    track = reply_track_class()()
    ramp = np.arange(1, 4 * FRAME_SAMPLES + 1, dtype="<i2") * 4  # every sample its own value
    track.play(1, ramp.tobytes())

    async def frame() -> np.ndarray:
        return (await track.recv()).to_ndarray().reshape(-1).astype(np.int32)

    first = await frame()
    track.pause(1)
    paused = [await frame(), await frame()]
    track.resume()
    second = await frame()
    track.duck(1, -24.0)
    ducked = await frame()
    track.resume()
    fourth = await frame()
    assert all(not f.any() for f in paused)  # silence while paused...
    assert np.array_equal(np.concatenate([first, second]), ramp[: 2 * FRAME_SAMPLES])
    expected = ramp[2 * FRAME_SAMPLES : 3 * FRAME_SAMPLES].astype(np.float64)
    assert np.allclose(ducked, expected * 10 ** (-24 / 20), atol=1.0)  # ...quiet when ducked
    assert np.array_equal(fourth, ramp[3 * FRAME_SAMPLES :])  # ...and nothing lost
    # A duck that a reply never resumed does not carry over to the next reply.
    track.duck(1, -24.0)
    track.play(2, ramp[:FRAME_SAMPLES].tobytes())
    assert np.array_equal(await frame(), ramp[:FRAME_SAMPLES])
    track.stop()

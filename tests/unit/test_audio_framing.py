"""Reframer: any chunking in, exact frames out, nothing lost or shifted."""

from __future__ import annotations

import itertools
import os

import pytest

from audio.framing import Reframer


def _feed(reframer: Reframer, data: bytes, sizes: list[int]) -> list[bytes]:
    frames: list[bytes] = []
    pos = 0
    for size in itertools.cycle(sizes):
        if pos >= len(data):
            break
        frames += reframer.push(data[pos : pos + size])
        pos += size
    return frames


@pytest.mark.parametrize("sizes", [[1], [7], [641], [65536], [1, 639, 640, 3, 1281], [640]])
def test_concatenated_frames_equal_the_input_prefix(sizes: list[int]) -> None:
    data = os.urandom(640 * 150 + 333)
    reframer = Reframer(16000, 20)
    frames = _feed(reframer, data, sizes)
    assert all(len(f) == 640 and isinstance(f, bytes) for f in frames)
    assert len(frames) == 150
    assert b"".join(frames) == data[: 640 * 150]
    assert reframer.pending == 333


def test_odd_chunks_keep_sample_alignment() -> None:
    # Samples 0, 1, 2, ... as PCM16; after any odd split, every frame must start on a sample.
    data = b"".join(i.to_bytes(2, "little") for i in range(160 * 10))
    reframer = Reframer(8000, 20)
    frames = _feed(reframer, data, [3, 5, 1, 321])
    assert len(frames) == 10
    for k, frame in enumerate(frames):
        assert int.from_bytes(frame[:2], "little") == 160 * k


def test_exact_frame_fast_path_returns_a_copy_and_leaves_nothing_pending() -> None:
    reframer = Reframer()
    chunk = bytearray(b"\x01\x02" * 320)
    (frame,) = reframer.push(chunk)
    chunk[0] = 0xFF
    assert frame[0] == 0x01
    assert isinstance(frame, bytes)
    assert reframer.pending == 0


def test_exact_frame_after_a_remainder_goes_through_the_buffer() -> None:
    reframer = Reframer()
    assert reframer.push(b"a" * 100) == []
    frames = reframer.push(b"b" * 640)
    assert frames == [b"a" * 100 + b"b" * 540]
    assert reframer.pending == 100


def test_remainder_is_returned_once_completed() -> None:
    reframer = Reframer(16000, 10)
    assert reframer.push(b"x" * 319) == []
    assert reframer.pending == 319
    assert reframer.push(b"y") == [b"x" * 319 + b"y"]
    assert reframer.pending == 0


def test_memoryview_of_int16_is_counted_in_bytes() -> None:
    import numpy as np

    reframer = Reframer(16000, 20)
    samples = np.arange(480, dtype="<i2")
    frames = reframer.push(memoryview(samples))
    assert frames == [samples[:320].tobytes()]
    assert reframer.pending == 320


def test_reset_drops_partial_frame() -> None:
    reframer = Reframer()
    reframer.push(b"z" * 500)
    reframer.reset()
    assert reframer.pending == 0
    assert reframer.push(b"q" * 640) == [b"q" * 640]


@pytest.mark.parametrize(
    ("rate", "ms", "size"), [(8000, 10, 160), (16000, 30, 960), (48000, 20, 1920)]
)
def test_frame_sizes(rate: int, ms: int, size: int) -> None:
    assert Reframer(rate, ms).frame_bytes == size


@pytest.mark.parametrize("ms", [0, 5, 25, 40])
def test_other_frame_durations_are_rejected(ms: int) -> None:
    with pytest.raises(ValueError, match="frame_ms"):
        Reframer(16000, ms)


def test_fractional_frame_is_rejected() -> None:
    with pytest.raises(ValueError, match="whole number"):
        Reframer(22050, 10)


def test_flush_pads_the_partial_frame_and_empties_the_buffer():
    r = Reframer(16000, 20)
    assert r.flush() is None
    assert r.push(b"\x01" * 700) == [b"\x01" * 640]
    assert r.flush() == b"\x01" * 60 + bytes(580)
    assert r.pending == 0 and r.flush() is None
    assert r.push(b"\x02" * 640) == [b"\x02" * 640]

"""PCM16 conversion, level and frame-size helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audio.pcm import SILENCE_DBFS, float_to_pcm16, frame_bytes, pcm16_to_float, rms_dbfs


def _sine(freq: float, amp: float, n: int, rate: int = 16000) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)


def test_pcm16_to_float_scales_extremes_and_is_little_endian() -> None:
    raw = b"\x00\x80" + b"\xff\x7f" + b"\x00\x00" + b"\x01\x00" + b"\x00\x40"
    out = pcm16_to_float(raw)
    assert out.dtype == np.float32
    assert out.tolist() == [-1.0, 32767 / 32768, 0.0, 1 / 32768, 0.5]


def test_pcm16_to_float_accepts_bytearray_and_memoryview() -> None:
    raw = np.array([1, -2, 300], dtype="<i2").tobytes()
    expected = pcm16_to_float(raw)
    assert np.array_equal(pcm16_to_float(bytearray(raw)), expected)
    assert np.array_equal(pcm16_to_float(memoryview(raw)), expected)


def test_odd_length_is_rejected_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        pcm16_to_float(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="even number of bytes"):
        rms_dbfs(b"\x00")


def test_float_to_pcm16_clips_and_rounds() -> None:
    samples = np.array([-2.0, -1.0, 0.0, 1.0, 3.0, 0.5, 1.4 / 32768, 1.6 / 32768, -0.6 / 32768])
    out = np.frombuffer(float_to_pcm16(samples), dtype="<i2").tolist()
    assert out == [-32768, -32768, 0, 32767, 32767, 16384, 1, 2, -1]


def test_round_trip_is_lossless_for_every_sample() -> None:
    every = np.arange(-32768, 32768, dtype=np.int64).astype("<i2").tobytes()
    assert float_to_pcm16(pcm16_to_float(every)) == every


def test_rms_of_full_scale_sine_is_minus_3_dbfs() -> None:
    pcm = np.rint(_sine(1000, 32767, 16000)).astype("<i2").tobytes()
    assert rms_dbfs(pcm) == pytest.approx(-3.01, abs=0.01)


def test_rms_tracks_amplitude_in_decibels() -> None:
    loud = np.rint(_sine(440, 10000, 1600)).astype("<i2").tobytes()
    quiet = np.rint(_sine(440, 1000, 1600)).astype("<i2").tobytes()
    assert rms_dbfs(loud) - rms_dbfs(quiet) == pytest.approx(20.0, abs=0.05)
    assert rms_dbfs(loud) == pytest.approx(20 * math.log10(10000 / 32768) - 3.01, abs=0.02)


def test_full_scale_square_is_zero_dbfs() -> None:
    pcm = np.array([-32768, -32768] * 100, dtype="<i2").tobytes()
    assert rms_dbfs(pcm) == pytest.approx(0.0, abs=1e-9)


def test_silence_and_empty_report_the_floor_not_minus_infinity() -> None:
    assert rms_dbfs(b"") == SILENCE_DBFS
    assert rms_dbfs(bytes(640)) == SILENCE_DBFS
    one_lsb = np.ones(320, dtype="<i2").tobytes()
    assert rms_dbfs(one_lsb) == pytest.approx(-90.31, abs=0.01)


@pytest.mark.parametrize(
    ("rate", "ms", "expected"),
    [(16000, 20, 640), (8000, 20, 320), (16000, 10, 320), (48000, 30, 2880), (22050, 20, 882)],
)
def test_frame_bytes(rate: int, ms: int, expected: int) -> None:
    assert frame_bytes(rate, ms) == expected


def test_frame_bytes_rejects_fractional_and_nonpositive() -> None:
    with pytest.raises(ValueError, match="whole number of samples"):
        frame_bytes(22050, 10)
    with pytest.raises(ValueError, match="positive"):
        frame_bytes(0, 20)
    with pytest.raises(ValueError, match="positive"):
        frame_bytes(16000, -20)

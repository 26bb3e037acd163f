"""soxr-backed resampling: lengths, frequency and level preserved, streaming == one-shot."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from audio.resample import SUPPORTED_RATES, StreamResampler, resample

PAIRS = [(a, b) for a, b in itertools.product(SUPPORTED_RATES, repeat=2) if a != b]


def _sine(freq: float, rate: int, seconds: float, amp: float = 10000.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum)) * rate / x.size


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_one_shot_keeps_length_frequency_and_level(src: int, dst: int) -> None:
    pcm = _sine(440, src, 1.0)
    out = _samples(resample(pcm, src, dst))
    assert abs(out.size - dst) <= 2
    # Ignore the edges, where the filter sees the signal switch on and off.
    core = out[dst // 10 : -dst // 10]
    assert _peak_hz(core, dst) == pytest.approx(440, abs=dst / core.size + 1)
    assert _rms(core) == pytest.approx(10000 / np.sqrt(2), rel=0.01)


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_streaming_in_odd_chunks_matches_one_shot(src: int, dst: int) -> None:
    pcm = _sine(440, src, 0.5) + _sine(1000, src, 0.5, amp=3000)
    reference = _samples(resample(pcm, src, dst))
    stream = StreamResampler(src, dst)
    out = bytearray()
    pos = 0
    for size in itertools.cycle((1, 7, 641, 333, 2, 4095)):
        if pos >= len(pcm):
            break
        piece = stream.process(pcm[pos : pos + size])
        assert len(piece) % 2 == 0
        out += piece
        pos += size
    out += stream.flush()
    streamed = _samples(bytes(out))
    assert abs(streamed.size - reference.size) <= 2
    n = min(streamed.size, reference.size)
    assert np.max(np.abs(streamed[:n] - reference[:n])) <= 4


def test_downsampling_removes_content_above_the_new_nyquist() -> None:
    # A 5 kHz tone cannot exist at 8 kHz; without an anti-alias filter it folds to 3 kHz.
    out = _samples(resample(_sine(5000, 16000, 1.0), 16000, 8000))
    assert _rms(out[800:-800]) < 10000 / np.sqrt(2) * 10 ** (-60 / 20)


def test_equal_rates_return_input_unchanged() -> None:
    pcm = _sine(440, 16000, 0.1)
    assert resample(pcm, 16000, 16000) is pcm
    assert resample(bytearray(pcm), 16000, 16000) == pcm
    stream = StreamResampler(16000, 16000)
    assert stream.process(pcm[:101]) + stream.process(pcm[101:]) + stream.flush() == pcm


def test_empty_input() -> None:
    assert resample(b"", 8000, 16000) == b""
    stream = StreamResampler(8000, 16000)
    assert stream.process(b"") == b""
    assert stream.flush() == b""


@pytest.mark.parametrize("bad", [0, 11025, 44100, -16000])
def test_unsupported_rates_raise(bad: int) -> None:
    with pytest.raises(ValueError, match="not supported"):
        resample(b"\x00\x00", bad, 16000)
    with pytest.raises(ValueError, match="not supported"):
        StreamResampler(16000, bad)


def test_one_shot_rejects_odd_length() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        resample(b"\x00\x00\x00", 8000, 16000)


def test_flush_makes_the_stream_reusable() -> None:
    pcm = _sine(440, 8000, 0.3)
    stream = StreamResampler(8000, 16000)
    first = _samples(stream.process(pcm) + stream.flush())
    second = _samples(stream.process(pcm) + stream.flush())
    assert first.size == second.size
    assert abs(first.size - 2 * len(pcm) // 2) <= 2
    # soxr dithers its int16 output, so runs agree to the last bit or two, not exactly.
    assert np.max(np.abs(first - second)) <= 2


def test_reset_drops_buffered_audio() -> None:
    loud = _sine(440, 8000, 0.2)
    stream = StreamResampler(8000, 16000)
    stream.process(loud)
    stream.reset()
    out = _samples(stream.process(bytes(3200)) + stream.flush())
    assert out.size > 0
    assert np.max(np.abs(out)) <= 2  # silence, up to soxr's output dither

"""G.711 mu-law against the ITU-T reference values and its quantisation bounds."""

from __future__ import annotations

import numpy as np
import pytest

from audio.mulaw import mulaw_decode, mulaw_encode


def _dec(codes: list[int]) -> list[int]:
    return np.frombuffer(mulaw_decode(bytes(codes)), dtype="<i2").tolist()


def _enc(samples: list[int]) -> list[int]:
    return list(mulaw_encode(np.array(samples, dtype="<i2").tobytes()))


def test_decode_known_values() -> None:
    assert _dec([0xFF, 0x7F, 0x00, 0x80]) == [0, 0, -32124, 32124]
    # First step of each polarity, and segment boundaries (ITU table, 16-bit left-justified).
    assert _dec([0xFE, 0x7E, 0xF0, 0xEF, 0x8F]) == [8, -8, 120, 132, 16764]


def test_encode_known_values() -> None:
    assert _enc([0, -1, -4, -5, 1, 32767, -32768]) == [0xFF, 0x7F, 0x7F, 0x7E, 0xFF, 0x80, 0x00]
    assert _enc([32124, -32124, 8, -8]) == [0x80, 0x00, 0xFE, 0x7E]


def test_all_codes_round_trip_except_negative_zero() -> None:
    codes = bytes(range(256))
    again = mulaw_encode(mulaw_decode(codes))
    mismatches = [(c, again[c]) for c in range(256) if again[c] != c]
    # 0x7F decodes to 0 like 0xFF, and 0 encodes to the canonical 0xFF.
    assert mismatches == [(0x7F, 0xFF)]


def test_decoded_values_are_monotonic_in_each_polarity() -> None:
    values = np.frombuffer(mulaw_decode(bytes(range(256))), dtype="<i2").astype(int)
    negative = values[:128]  # 0x00 (most negative) .. 0x7F (-0)
    positive = values[128:]  # 0x80 (most positive) .. 0xFF (+0)
    assert np.all(np.diff(negative) > 0)
    assert np.all(np.diff(positive) < 0)
    assert np.array_equal(negative, -positive)


def test_every_sample_is_within_half_a_step_of_its_code() -> None:
    x = np.arange(-32124, 32125, dtype=np.int64)
    y = np.frombuffer(mulaw_decode(mulaw_encode(x.astype("<i2").tobytes())), dtype="<i2")
    err = np.abs(y.astype(np.int64) - x)
    # The 16-bit step of segment e is 8 << e; the decoder returns the middle of the step.
    # Encoding drops the 2 LSBs (14-bit codec) and uses one's complement for negatives,
    # which adds at most 3 and 1 respectively.
    segment = np.clip(np.floor(np.log2(np.maximum(np.abs(y) + 132, 1) / 132)), 0, 7)
    bound = (4 * 2**segment) + 4
    assert np.all(err <= bound)
    assert err.max() == 512  # half of the top segment's 1024 step


def test_values_beyond_the_top_code_clip() -> None:
    assert _dec(_enc([32767, -32768, 32200])) == [32124, -32124, 32124]


def test_sine_round_trip_snr_meets_g711() -> None:
    rate = 8000
    t = np.arange(rate) / rate
    for amp in (30000, 8000, 1000):
        x = np.rint(amp * np.sin(2 * np.pi * 1020 * t)).astype("<i2")
        y = np.frombuffer(mulaw_decode(mulaw_encode(x.tobytes())), dtype="<i2")
        noise = y.astype(float) - x.astype(float)
        snr = 10 * np.log10(np.mean(x.astype(float) ** 2) / np.mean(noise**2))
        # Companding keeps SNR near 38 dB over a wide range of levels (G.712 asks >= ~35 dB).
        assert snr > 35, (amp, snr)


def test_frame_sizes_and_types() -> None:
    frame = np.arange(160, dtype="<i2") * 100
    coded = mulaw_encode(frame.tobytes())
    assert isinstance(coded, bytes) and len(coded) == 160
    decoded = mulaw_decode(coded)
    assert isinstance(decoded, bytes) and len(decoded) == 320
    assert mulaw_decode(bytearray(coded)) == decoded
    assert mulaw_encode(memoryview(frame.tobytes())) == coded
    assert mulaw_decode(b"") == b"" and mulaw_encode(b"") == b""


def test_encode_rejects_odd_length() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        mulaw_encode(b"\x00\x00\x00")

"""Packet-loss concealment: gaps in the timestamps are filled from both sides, the stream
keeps its length and clock, and what should not be filled is not."""

from __future__ import annotations

import numpy as np

from audio.conceal import MAX_FRAMES, Concealment, pitch_period

RATE = 48000
N = 960  # 20 ms


def tone(hz: float, start: int, count: int, level: float = 8000.0) -> np.ndarray:
    t = np.arange(start, start + count)
    return level * np.sin(2 * np.pi * hz * t / RATE)


def pcm(x: np.ndarray) -> bytes:
    return np.round(x).astype("<i2").tobytes()


def samples(frames: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float64)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def test_the_pitch_period_of_a_steady_tone() -> None:
    for hz, period in ((200.0, 240), (120.0, 400), (300.0, 160)):
        found = pitch_period(tone(hz, 0, N), RATE)
        assert found % period == 0, (hz, found)  # a whole number of cycles
        assert 120 <= found <= 600


def test_a_lost_frame_of_a_steady_voice_is_filled_with_its_continuation() -> None:
    """220 Hz (a period of 218.2 samples, not a whole number): the filled frame is within a
    tenth of the tone's level of what was lost, where repeating the last frame is not."""
    conceal = Concealment(RATE)
    frames = [tone(220.0, i * N, N) for i in range(4)]
    assert conceal.before(0, N, pcm(frames[0])) == []
    assert conceal.before(N, N, pcm(frames[1])) == []
    filled = conceal.before(3 * N, N, pcm(frames[3]))  # the third frame was lost
    assert len(filled) == 1 and len(filled[0]) == 2 * N and conceal.filled == 1
    error = rms(samples(filled) - frames[2])
    assert error < 0.1 * rms(frames[2]), error  # (the last frame repeated is off by 0.5+)


def test_the_filler_cross_fades_from_the_sound_before_to_the_sound_after() -> None:
    conceal = Concealment(RATE)
    low, high = tone(150.0, 0, 2 * N), tone(300.0, 0, 2 * N, level=4000.0)
    conceal.before(0, N, pcm(low[:N]))
    conceal.before(N, N, pcm(low[N:]))
    filled = samples(conceal.before(3 * N, N, pcm(high[N:])))
    # It starts as the low tone carried on, and ends leading into the high one.
    assert np.allclose(filled[:20], tone(150.0, 2 * N, 20), atol=300)
    assert np.allclose(filled[-20:], tone(300.0, N - 20, 20, level=4000.0), atol=300)


def test_a_long_gap_fades_out_then_in_with_silence_between() -> None:
    conceal = Concealment(RATE)
    conceal.before(0, N, pcm(tone(200.0, 0, N)))
    filled = conceal.before(11 * N, N, pcm(tone(200.0, 11 * N, N)))
    assert len(filled) == 10 and conceal.filled == 10
    assert all(len(f) == 2 * N for f in filled)
    levels = [rms(samples([f])) for f in filled]
    assert levels[0] > 3000 and levels[-1] > 3000
    assert levels[3:7] == [0.0, 0.0, 0.0, 0.0]
    assert levels[0] > levels[1] > levels[2] and levels[7] < levels[8] < levels[9]


def test_a_gap_under_six_frames_is_one_cross_fade_at_the_voices_level() -> None:
    """Four and five frames: the two sides' weights add up to one all the way through, so a
    steady voice keeps its level (it does not dip where the fades would meet)."""
    for missing in (4, 5):
        conceal = Concealment(RATE)
        conceal.before(0, N, pcm(tone(200.0, 0, N)))
        filled = conceal.before((missing + 1) * N, N, pcm(tone(200.0, (missing + 1) * N, N)))
        assert len(filled) == missing
        truth = tone(200.0, N, missing * N)
        assert rms(samples(filled) - truth) < 0.05 * rms(truth)


def test_other_rates_and_frame_sizes() -> None:
    """8 and 16 kHz (searched at the rate itself) and 10 ms frames at 48 kHz."""
    for rate, size, hz in ((8000, 160, 200.0), (16000, 320, 160.0), (48000, 480, 250.0)):
        t = np.arange(4 * size)
        voice = 8000 * np.sin(2 * np.pi * hz * t / rate)
        found = pitch_period(voice[:size], rate)
        assert found % round(rate / hz) == 0, (rate, found)
        conceal = Concealment(rate)
        conceal.before(0, size, pcm(voice[:size]))
        filled = conceal.before(2 * size, size, pcm(voice[2 * size : 3 * size]))
        assert len(filled) == 1 and len(filled[0]) == 2 * size
        truth = voice[size : 2 * size]
        assert rms(samples(filled) - truth) < 0.1 * rms(truth), rate


def test_a_frame_of_another_size_before_the_gap_counts_as_silence() -> None:
    conceal = Concealment(RATE)
    conceal.before(0, N // 2, pcm(tone(200.0, 0, N // 2)))  # a 10 ms frame, then 20 ms ones
    after = tone(200.0, 2 * N, N)
    filled = samples(conceal.before(N // 2 + N, N, pcm(after)))
    assert len(filled) == N
    assert rms(filled[:20]) < 0.05 * rms(after)  # fades in from nothing
    assert rms(filled[-N // 4 :]) > 0.5 * rms(after)


def test_silence_on_both_sides_is_filled_with_silence() -> None:
    conceal = Concealment(RATE)
    quiet = bytes(2 * N)
    conceal.before(0, N, quiet)
    assert conceal.before(3 * N, N, quiet) == [quiet, quiet]


def test_the_stream_keeps_its_length_through_random_loss() -> None:
    rnd = np.random.default_rng(5)
    voice = tone(180.0, 0, 300 * N)
    conceal = Concealment(RATE)
    out: list[bytes] = []
    kept = 0
    for i in range(300):
        if 0 < i < 299 and rnd.random() < 0.1:
            continue
        frame = pcm(voice[i * N : (i + 1) * N])
        out += conceal.before(i * N, N, frame)
        out.append(frame)
        kept += 1
    assert kept < 290 and conceal.filled == 300 - kept
    heard = samples(out)
    assert len(heard) == len(voice)
    assert rms(heard - voice) < 0.1 * rms(voice)


def test_late_repeated_first_and_unfillable_frames_get_no_filler() -> None:
    conceal = Concealment(RATE)
    frame = pcm(tone(200.0, 0, N))
    assert conceal.before(None, N, frame) == []  # no timestamp
    assert conceal.before(1000, N, frame) == []  # the first
    assert conceal.before(1000 + N, N, frame) == []  # on time
    assert conceal.before(1000 + N, N, frame) == []  # repeated
    assert conceal.before(1000, N, frame) == []  # late...
    assert conceal.before(1000 + 2 * N, N, frame) == []  # ...and the next is on time
    # A stream that starts again further back is followed from there.
    assert conceal.before(1000 - 60 * N, N, frame) == []
    assert len(conceal.before(1000 - 58 * N, N, frame)) == 1
    # Fifty frames behind the clock is late; fifty-one is a stream that started again.
    conceal.before(100 * N, N, frame)
    assert conceal.before(51 * N, N, frame) == []  # 50 behind: late, the clock stays
    assert len(conceal.before(102 * N, N, frame)) == 1
    assert conceal.before(52 * N, N, frame) == []  # 51 behind 103 * N: followed
    assert len(conceal.before(54 * N, N, frame)) == 1
    # A gap longer than a second (a peer that paused) is not filled...
    conceal.before(0, N, frame)
    assert conceal.before((MAX_FRAMES + 2) * N, N, frame) == []
    # ...one just within is.
    conceal.before(0, N, frame)
    assert len(conceal.before((MAX_FRAMES + 1) * N, N, frame)) == MAX_FRAMES
    assert conceal.filled == MAX_FRAMES + 3


def test_the_timestamp_wraps() -> None:
    conceal = Concealment(RATE)
    frame = pcm(tone(200.0, 0, N))
    conceal.before(2**32 - N, N, frame)
    assert conceal.before(0, N, frame) == []
    conceal = Concealment(RATE)
    conceal.before(2**32 - N, N, frame)
    assert len(conceal.before(N, N, frame)) == 1  # the frame at 0 was lost

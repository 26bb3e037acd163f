"""The audio pace: a token bucket of samples, exact to the sample, with the clock passed in."""

from __future__ import annotations

import random

import pytest

from audio.pace import AudioPace


def test_the_burst_is_admitted_at_once_and_not_a_sample_more() -> None:
    pace = AudioPace(16000, 1.5, 3.0, now=100.0)
    assert pace.capacity == 48000
    assert pace.admit(47999, 100.0) == 47999
    assert pace.admit(2, 100.0) == 1
    assert pace.admit(1, 100.0) == 0
    assert pace.dropped_seconds == pytest.approx(2 / 16000)


def test_it_refills_at_max_speed_times_real_time() -> None:
    pace = AudioPace(16000, 1.5, 3.0, now=0.0)
    assert pace.admit(48000, 0.0) == 48000
    assert pace.admit(100000, 1.0) == 24000  # 1.5 s of audio per second
    assert pace.admit(100000, 1.5) == 12000
    assert pace.admit(100000, 1.5) == 0
    assert pace.available(1.5 + 1 / 24000) == 1
    # Never more than the burst, however long the client was quiet.
    assert pace.available(1000.0) == 48000


def test_a_real_time_client_never_loses_a_sample() -> None:
    """50 frames of 20 ms a second for ten minutes, each delayed up to 1.5 s by the network
    (in order: a late frame holds back the ones behind it, which then arrive together)."""
    rng = random.Random(7)
    pace = AudioPace(16000, 1.5, 3.0, now=0.0)
    frame = 320
    sent = admitted = 0
    t = 0.0
    for i in range(30000):
        t = max(t, i * 0.02 + rng.uniform(0.0, 1.5))
        sent += frame
        admitted += pace.admit(frame, t)
    assert admitted == sent
    assert pace.dropped_seconds == 0.0


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 48000])
def test_a_flood_gets_max_speed_times_real_time_plus_the_burst(rate: int) -> None:
    pace = AudioPace(rate, 1.5, 3.0, now=0.0)
    admitted = 0
    for i in range(1000):  # 64 KiB frames every 10 ms for 10 s
        admitted += pace.admit(32768, i * 0.01)
    # 3 s of burst + 1.5 x 9.99 s, whole samples (a fraction waits for the next frame)
    assert admitted == 3 * rate + int(1.5 * 999 * rate / 100)
    assert pace.dropped_seconds == pytest.approx(1000 * 32768 / rate - admitted / rate)


def test_changing_the_rate_keeps_the_seconds_of_slack() -> None:
    pace = AudioPace(16000, 1.5, 3.0, now=0.0)
    assert pace.admit(40000, 0.0) == 40000  # 0.5 s left
    pace.set_rate(8000, 0.0)
    assert pace.rate == 8000
    assert pace.available(0.0) == 4000  # still 0.5 s, at the new rate
    assert pace.admit(100000, 1.0) == 4000 + 12000


def test_time_going_backwards_refills_nothing() -> None:
    pace = AudioPace(16000, 1.5, 3.0, now=10.0)
    pace.admit(48000, 10.0)
    assert pace.available(9.0) == 0
    assert pace.available(10.5) == 12000


@pytest.mark.parametrize("args", [(0, 1.5, 3.0), (16000, 0.0, 3.0), (16000, 1.5, 0.0)])
def test_nonsense_is_refused(args: tuple[int, float, float]) -> None:
    with pytest.raises(ValueError):
        AudioPace(*args, now=0.0)

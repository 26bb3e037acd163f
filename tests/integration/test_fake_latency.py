"""The fakes' provider timing (tests/fakes/latency.py): spreads drawn within their bounds
and repeatable, and the Deepgram fake at the `cloud` profile sending interims only every
250 ms of audio and its final 150-300 ms after `Finalize`, through the real adapter."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest

from pipelines.stt.deepgram import DeepgramSTT
from tests.fakes import fixtures as fx
from tests.fakes import speechcodec
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.deepgram import FakeDeepgram
from tests.fakes.latency import CLOUD, Spread, seconds

fake_deepgram = fx.fake_deepgram
fake_anthropic = fx.fake_anthropic

FRAME = 640
SENTENCE = "spaced repetition helps memory because retrieval strengthens recall"


def test_a_spread_stays_in_its_bounds_and_repeats_with_its_seed() -> None:
    a = Spread(0.35, 0.8, rng=random.Random(7))
    b = Spread(0.35, 0.8, rng=random.Random(7))
    drawn = [a.draw() for _ in range(500)]
    assert all(0.35 <= d <= 0.8 for d in drawn)
    assert min(drawn) < 0.4 and max(drawn) > 0.75  # spread over the range, not a constant
    assert drawn == [b.draw() for _ in range(500)] == a.drawn
    assert seconds(0.25) == 0.25
    with pytest.raises(ValueError):
        Spread(0.5, 0.1)


async def test_cloud_timing_reaches_the_adapter(
    fake_deepgram: FakeDeepgram, fake_anthropic: FakeAnthropic
) -> None:
    CLOUD.apply(deepgram=fake_deepgram, llm=fake_anthropic, tts=fake_deepgram, seed=3)
    interims: list[tuple[float, str]] = []
    stt = DeepgramSTT(fake_deepgram.api_key, base_url=fake_deepgram.base_url)
    stream = await stt.open(lambda text: interims.append((time.monotonic(), text)))
    audio = speechcodec.encode(SENTENCE)
    start = time.monotonic()
    for i in range(0, len(audio), FRAME):  # real time: 20 ms a frame
        await asyncio.sleep(max(0.0, start + i / FRAME * 0.02 - time.monotonic()))
        stream.push(audio[i : i + FRAME])
    released = time.monotonic()
    final = await stream.finalize()
    waited = time.monotonic() - released
    await stream.aclose()
    assert final == SENTENCE
    # An interim at most every 250 ms of audio (the audio lasted len/32000 s).
    assert 2 <= len(interims) <= len(audio) / 32000 / 0.25 + 1
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(interims)]
    assert min(gaps) > 0.2
    # The final came after the drawn Finalize delay.
    assert isinstance(fake_deepgram.finalize_delay, Spread)
    drawn = fake_deepgram.finalize_delay.drawn[-1]
    assert 0.15 <= drawn <= 0.3 and drawn <= waited < drawn + 0.2

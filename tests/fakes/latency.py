"""Provider timing for the loopback fakes: a fixed delay, or a spread drawn per request.

`CLOUD` follows what the providers publish for streaming voice agents:

- Deepgram live (nova-3): interim results about every 250 ms of audio; a final 150-300 ms
  after the caller stops (here: the answer to `Finalize`).
- Anthropic Messages (Haiku-class model, streaming): first token 350-800 ms after the
  request, then a token every 10-25 ms.
- Deepgram Aura: first audio 150-300 ms after the request.

Spreads are uniform between their bounds and seeded, so a run can be repeated.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.fakes.base import FakeServer
    from tests.fakes.deepgram import FakeDeepgram


@dataclass
class Spread:
    """A delay in seconds drawn uniformly from [low, high] each time it is taken."""

    low: float
    high: float
    rng: random.Random = field(default_factory=lambda: random.Random(0), repr=False)
    #: Every delay drawn so far, in order.
    drawn: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high:
            raise ValueError("a spread needs 0 <= low <= high")

    def draw(self) -> float:
        value = self.rng.uniform(self.low, self.high)
        self.drawn.append(value)
        return value

    @property
    def middle(self) -> float:
        return (self.low + self.high) / 2


Delay = float | Spread


def seconds(delay: Delay) -> float:
    return delay.draw() if isinstance(delay, Spread) else delay


async def pause(delay: Delay) -> None:
    """Wait out one delay (drawn now, if it is a spread)."""
    s = seconds(delay)
    if s > 0:
        await asyncio.sleep(s)


@dataclass(frozen=True)
class Profile:
    """Timing for one set of fakes (seconds; `interim_every_ms` in ms of audio)."""

    name: str
    interim_every_ms: int
    stt_final: tuple[float, float]
    llm_first: tuple[float, float]
    llm_gap: tuple[float, float]
    tts_first: tuple[float, float]

    def apply(
        self, *, deepgram: FakeDeepgram, llm: FakeServer, tts: FakeServer, seed: int = 0
    ) -> None:
        """Set the fakes' delays (`tts` may be the same fake as `deepgram`)."""
        rng = random.Random(seed)

        def spread(bounds: tuple[float, float]) -> Spread:
            return Spread(*bounds, rng=random.Random(rng.random()))

        deepgram.interim_every_ms = self.interim_every_ms
        deepgram.finalize_delay = spread(self.stt_final)
        llm.first_delay = spread(self.llm_first)
        llm.chunk_delay = spread(self.llm_gap)
        tts.first_delay = spread(self.tts_first)


CLOUD = Profile(
    name="cloud",
    interim_every_ms=250,
    stt_final=(0.15, 0.30),
    llm_first=(0.35, 0.80),
    llm_gap=(0.010, 0.025),
    tts_first=(0.15, 0.30),
)

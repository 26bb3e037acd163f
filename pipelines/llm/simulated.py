"""Simulated language model, for load tests and demos only: a fixed reply on a fixed clock.

The first token comes `first_token_s` (300 ms) after the transcript, then the rest of the
20 tokens `token_interval_s` (10 ms) apart. The first token is a whole sentence ending in
a space, so the sentence chunker hands it to TTS at once: with the simulated STT (150 ms)
and TTS (100 ms) and a 200 ms endpointing silence, end of speech -> first audio has a
floor of 750 ms, and whatever a benchmark measures above it is the server's own overhead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from pipelines.ports import Exchange
from pipelines.provider_spec import simulated
from pipelines.recap import recap

PROVIDER = simulated("llm", lambda: SimulatedLLM())

#: 20 tokens: a whole first sentence (so TTS can start on the first token), then the
#: second sentence in 19 sub-word tokens as a real model streams them. The two pieces the
#: sentence chunker makes are 100 characters, which the simulated TTS speaks in 1.5 s
#: (75 frames of 20 ms), and the first piece (0.82 s of audio) outlasts the time the
#: second one takes to arrive, so a reply plays without a gap when the server keeps up.
REPLY_TOKENS: tuple[str, ...] = (
    "Good point: spacing reviews out is what makes it stick. ",
    "Wh",
    "ich",
    " top",
    "ic",
    " wou",
    "ld",
    " yo",
    "u",
    " re",
    "vi",
    "ew",
    " fi",
    "rst",
    ",",
    " a",
    "nd",
    " wh",
    "en",
    "?",
)
REPLY_TEXT = "".join(REPLY_TOKENS)


class SimulatedLLM:
    name = "simulated"

    def __init__(self, first_token_s: float = 0.3, token_interval_s: float = 0.01) -> None:
        self.first_token_s = first_token_s
        self.token_interval_s = token_interval_s

    async def stream(self, user_text: str, history: Sequence[Exchange]) -> AsyncIterator[str]:
        await asyncio.sleep(self.first_token_s)
        yield REPLY_TOKENS[0]
        for token in REPLY_TOKENS[1:]:
            await asyncio.sleep(self.token_interval_s)
            yield token

    def recap(self, history: Sequence[Exchange]) -> str:
        return recap(history)

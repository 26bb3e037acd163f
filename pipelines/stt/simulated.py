"""Simulated speech-to-text, for load tests and demos only: it hears nothing.

It answers with a fixed, known delay so that a benchmark can subtract a known floor from
the end-of-speech -> first-audio latency and see the server's own overhead: the final
transcript comes `final_delay_s` (150 ms) after `finalize`. `push` is O(1) (it counts
frames, it keeps no audio) so the simulated stage costs the hot path nothing. Never
select it for real users: every transcript is the same made-up sentence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pipelines.provider_spec import simulated

PROVIDER = simulated("stt", lambda: SimulatedSTT())

#: Bytes of one 20 ms frame at 16 kHz PCM16, to report how much speech was heard.
_BYTES_PER_MS = 32


class SimulatedSTT:
    name = "simulated"

    def __init__(self, final_delay_s: float = 0.15) -> None:
        self.final_delay_s = final_delay_s

    async def open(self, on_interim: Callable[[str], None]) -> SimulatedSTTStream:
        return SimulatedSTTStream(self.final_delay_s)


class SimulatedSTTStream:
    """One conversation's utterances; only their length is remembered."""

    __slots__ = ("_bytes", "_delay")

    def __init__(self, final_delay_s: float) -> None:
        self._delay = final_delay_s
        self._bytes = 0

    def push(self, frame: bytes) -> None:
        self._bytes += len(frame)

    async def finalize(self) -> str:
        heard_ms, self._bytes = self._bytes // _BYTES_PER_MS, 0
        await asyncio.sleep(self._delay)
        return f"I said something for {heard_ms} milliseconds."

    def discard(self) -> None:
        self._bytes = 0

    async def aclose(self) -> None:
        self._bytes = 0

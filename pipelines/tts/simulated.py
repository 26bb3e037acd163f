"""Simulated text-to-speech, for load tests and demos only: a quiet tone on a fixed clock.

The first audio of each piece comes `first_audio_s` (100 ms) after the request, then the
whole piece at once in 20 ms frames (like a TTS that synthesizes faster than real time),
`seconds_per_char` long: the simulated LLM's 100-character reply is 1.5 s of audio. The
frames are slices of one precomputed buffer, so the simulated stage allocates next to
nothing and a benchmark measures the server, not the simulation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from pipelines.provider_spec import simulated

PROVIDER = simulated("tts", lambda: SimulatedTTS())

FRAME_MS = 20


def _tone(seconds: float, rate: int) -> bytes:
    """A quiet 220 Hz tone (audible in a demo, harmless at any volume)."""
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 220.0 * t) * 3000).astype("<i2").tobytes()


class SimulatedTTS:
    name = "simulated"

    def __init__(
        self,
        first_audio_s: float = 0.1,
        seconds_per_char: float = 0.015,
        sample_rate: int = 16000,
        max_piece_s: float = 10.0,
    ) -> None:
        self.first_audio_s = first_audio_s
        self.seconds_per_char = seconds_per_char
        self.sample_rate = sample_rate
        self._frame_bytes = sample_rate * FRAME_MS // 1000 * 2
        self._max_frames = int(max_piece_s * 1000) // FRAME_MS
        self._audio = memoryview(_tone(self._max_frames * FRAME_MS / 1000, sample_rate))

    def frames_for(self, text: str) -> int:
        """How many 20 ms frames a piece of text is spoken in (at least one)."""
        frames = round(len(text) * self.seconds_per_char * 1000 / FRAME_MS)
        return min(self._max_frames, max(1, frames))

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        await asyncio.sleep(self.first_audio_s)
        fb = self._frame_bytes
        for i in range(self.frames_for(text)):
            yield bytes(self._audio[i * fb : (i + 1) * fb])

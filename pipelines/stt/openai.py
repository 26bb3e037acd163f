"""OpenAI transcription, one request per utterance: the fallback recogniser.

It hears nothing until the turn ends (no interim transcripts), then the whole utterance
goes up as a WAV file. That costs an upload and a full recognition after the user
stopped, which is why it follows Deepgram's streaming in the chain and not the reverse.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Callable

from pipelines import resilience as rz
from pipelines.provider_spec import ProviderSpec, Setting
from pipelines.providers import STT_SAMPLE_RATE
from pipelines.vendors import OPENAI, openai_client

DEFAULT_MODEL = "gpt-4o-mini-transcribe"

PROVIDER = ProviderSpec(
    name="openai",
    stage="stt",
    settings={
        **OPENAI,
        "model": Setting("OPENAI_STT_MODEL", "OpenAI transcription model.", default=DEFAULT_MODEL),
    },
    build=lambda v, ctx: OpenAISTT(**v, **ctx.timeouts()),
)
_MAX_BYTES = 120 * STT_SAMPLE_RATE * 2
#: Shorter than this is a click, not a word; don't pay for a request.
_MIN_BYTES = STT_SAMPLE_RATE * 2 // 10


def wav_bytes(pcm: bytes, rate: int = STT_SAMPLE_RATE) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


class OpenAISTT:
    name = "openai"

    def __init__(
        self,
        api_key: str,
        *,
        model: str = DEFAULT_MODEL,
        base_url: str = "",
        language: str = "en",
        connect_timeout: float = 1.5,
        idle_timeout: float = 10.0,
    ) -> None:
        self.model = model
        self.language = language
        self._client = openai_client(api_key, base_url, connect_timeout, idle_timeout)

    async def open(self, on_interim: Callable[[str], None]) -> OpenAIUtteranceStream:
        return OpenAIUtteranceStream(self)

    async def transcribe(self, pcm: bytes) -> str:
        try:
            result = await self._client.audio.transcriptions.create(
                file=("utterance.wav", wav_bytes(pcm), "audio/wav"),
                model=self.model,
                language=self.language,
                response_format="json",
            )
        except Exception as exc:
            raise rz.classify_exception(self.name, exc) from None
        text = getattr(result, "text", None)
        if not isinstance(text, str):
            raise rz.fault(self.name, rz.PROTOCOL, "no text in transcription")
        return text.strip()

    async def aclose(self) -> None:
        await self._client.close()


class OpenAIUtteranceStream:
    def __init__(self, owner: OpenAISTT) -> None:
        self._owner = owner
        self._buf = bytearray()

    def push(self, frame: bytes) -> None:
        if len(self._buf) < _MAX_BYTES:
            self._buf += frame

    async def finalize(self) -> str:
        pcm, self._buf = bytes(self._buf), bytearray()
        if len(pcm) < _MIN_BYTES:
            return ""
        return await self._owner.transcribe(pcm)

    def discard(self) -> None:
        self._buf = bytearray()

    async def aclose(self) -> None:
        self._buf = bytearray()

"""OpenAI speech as text-to-speech: `response_format="pcm"` is raw PCM16 at 24 kHz, read
chunk by chunk as the response streams in, so the first audio plays before the sentence
is fully synthesised."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pipelines import resilience as rz
from pipelines.provider_spec import ProviderSpec, Setting
from pipelines.tts.pcm import aligned as _aligned
from pipelines.vendors import OPENAI, openai_client

DEFAULT_MODEL = "gpt-4o-mini-tts"
DEFAULT_VOICE = "alloy"

PROVIDER = ProviderSpec(
    name="openai",
    stage="tts",
    settings={
        **OPENAI,
        "model": Setting("OPENAI_TTS_MODEL", "OpenAI speech model.", default=DEFAULT_MODEL),
        "voice": Setting("OPENAI_TTS_VOICE", "OpenAI speech voice.", default=DEFAULT_VOICE),
    },
    build=lambda v, ctx: OpenAITTS(**v, **ctx.timeouts()),
)
#: OpenAI's `pcm` format is fixed at 24 kHz, 16-bit, mono.
PCM_RATE = 24000


class OpenAITTS:
    name = "openai"
    sample_rate = PCM_RATE

    def __init__(
        self,
        api_key: str,
        *,
        model: str = DEFAULT_MODEL,
        voice: str = DEFAULT_VOICE,
        base_url: str = "",
        connect_timeout: float = 1.5,
        idle_timeout: float = 10.0,
        chunk_bytes: int = 4800,
    ) -> None:
        self.model = model
        self.voice = voice
        self._chunk = chunk_bytes
        self._client = openai_client(api_key, base_url, connect_timeout, idle_timeout)

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        carry = b""
        started = False
        try:
            async with self._client.audio.speech.with_streaming_response.create(
                model=self.model, voice=self.voice, input=text, response_format="pcm"
            ) as response:
                async for chunk in response.iter_bytes(self._chunk):
                    started = True
                    carry, chunk = _aligned(carry, chunk)
                    if chunk:
                        yield chunk
        except Exception as exc:
            raise rz.classify_exception(self.name, exc, started=started) from None

    async def aclose(self) -> None:
        await self._client.close()

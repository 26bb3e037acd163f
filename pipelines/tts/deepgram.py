"""Deepgram Aura as text-to-speech, through the SDK's streaming REST call
(`speak.v1.audio.generate`): linear16 without a container at `sample_rate`, yielded as
the bytes arrive so the first audio plays before the sentence is fully synthesised."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pipelines import resilience as rz
from pipelines.provider_spec import ProviderSpec, Setting
from pipelines.stt.deepgram import environment_for, fast_headers
from pipelines.tts.pcm import aligned as _aligned
from pipelines.vendors import DEEPGRAM

DEFAULT_MODEL = "aura-2-thalia-en"

PROVIDER = ProviderSpec(
    name="deepgram",
    stage="tts",
    settings={
        **DEEPGRAM,
        "model": Setting("DEEPGRAM_TTS_MODEL", "Deepgram Aura voice model.", default=DEFAULT_MODEL),
    },
    build=lambda v, ctx: DeepgramTTS(**v, **ctx.timeouts()),
)


class DeepgramTTS:
    name = "deepgram"

    def __init__(
        self,
        api_key: str,
        *,
        model: str = DEFAULT_MODEL,
        base_url: str = "",
        sample_rate: int = 24000,
        connect_timeout: float = 1.5,
        idle_timeout: float = 10.0,
    ) -> None:
        import httpx
        from deepgram import AsyncDeepgramClient  # only once built: keyless servers never load it

        self.model = model
        self.sample_rate = sample_rate
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(idle_timeout, connect=connect_timeout))
        self._client = fast_headers(
            AsyncDeepgramClient(
                api_key=api_key,
                environment=environment_for(base_url),
                httpx_client=self._http,
                max_retries=0,
            )
        )

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        carry = b""
        started = False
        try:
            async for chunk in self._client.speak.v1.audio.generate(
                text=text,
                model=self.model,
                encoding="linear16",
                container="none",
                sample_rate=self.sample_rate,
            ):
                started = True
                carry, chunk = _aligned(carry, chunk)
                if chunk:
                    yield chunk
        except Exception as exc:
            raise rz.classify_exception(self.name, exc, started=started) from None

    async def aclose(self) -> None:
        await self._http.aclose()

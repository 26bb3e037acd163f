"""What several providers of one vendor share, declared once: one OpenAI key and endpoint
serve its STT, LLM and TTS, one Deepgram key and endpoint its STT and TTS.

Each of the vendor's declarations spreads the vendor's mapping into its own settings
(`{**OPENAI, "model": ...}`); the registry merges the settings by variable name, so the
README and the redaction list name each variable once.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pipelines.provider_spec import Setting, api_key, endpoint

OPENAI: Mapping[str, Setting] = MappingProxyType(
    {
        "api_key": api_key("OPENAI_API_KEY", "Enables openai LLM/STT/TTS."),
        "base_url": endpoint(
            "OPENAI_BASE_URL", "OpenAI endpoint incl. /v1; unset = public API (proxies/tests)."
        ),
    }
)

DEEPGRAM: Mapping[str, Setting] = MappingProxyType(
    {
        "api_key": api_key("DEEPGRAM_API_KEY", "Enables deepgram STT/TTS."),
        "base_url": endpoint(
            "DEEPGRAM_BASE_URL", "Deepgram http(s) endpoint; unset = public API (proxies/tests)."
        ),
    }
)


def openai_client(api_key: str, base_url: str, connect_timeout: float, idle_timeout: float) -> Any:
    """The async OpenAI client every OpenAI provider uses. SDK retries are off: retrying
    and falling back is the chain's job. The SDK is imported here, when a provider is
    built, never when its module is."""
    import openai

    return openai.AsyncOpenAI(
        api_key=api_key,
        base_url=base_url or None,
        max_retries=0,
        timeout=openai.Timeout(idle_timeout, connect=connect_timeout),
    )

"""Cloud providers by name, for the registry: `build_cloud_stt/llm/tts(name, cfg)`.

Each returns the provider, or None when its API key is not set (a chain entry without a
key is skipped, so `LLM_PROVIDERS=anthropic,openai,local` works with any subset of keys).
`ProviderConfig` is the engine's own view of the settings: `server` maps its settings
onto it, so `pipelines` never imports `server`. SDKs are imported only when a provider
is built, so a keyless server never loads them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pipelines.chain import ChainPolicy

log = logging.getLogger(__name__)

CLOUD_STT = ("deepgram", "openai")
CLOUD_LLM = ("anthropic", "openai")
CLOUD_TTS = ("deepgram", "openai")


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    anthropic_api_key: str = ""
    openai_api_key: str = ""
    deepgram_api_key: str = ""
    anthropic_model: str = "claude-haiku-4-5"
    openai_model: str = "gpt-4o-mini"
    openai_stt_model: str = "gpt-4o-mini-transcribe"
    openai_tts_model: str = "gpt-4o-mini-tts"
    openai_tts_voice: str = "alloy"
    deepgram_stt_model: str = "nova-3"
    deepgram_tts_model: str = "aura-2-thalia-en"
    deepgram_tts_sample_rate: int = 24000
    #: Empty = the provider's public endpoint; set for a proxy or a test server.
    anthropic_base_url: str = ""
    openai_base_url: str = ""
    deepgram_base_url: str = ""
    connect_timeout: float = 1.5
    first_byte_timeout: float = 2.5
    idle_timeout: float = 10.0
    retries: int = 1
    breaker_failures: int = 3
    breaker_cooldown: float = 30.0
    breaker_max_cooldown: float = 300.0
    llm_max_tokens: int = 300
    deepgram_endpointing_ms: int = 300
    deepgram_keepalive_s: float = 3.0

    def policy(self) -> ChainPolicy:
        return ChainPolicy(
            first_byte_timeout=self.first_byte_timeout,
            idle_timeout=self.idle_timeout,
            finalize_timeout=self.first_byte_timeout,
            open_timeout=self.connect_timeout + 0.5,
            retries=self.retries,
            breaker_failures=self.breaker_failures,
            breaker_cooldown=self.breaker_cooldown,
            breaker_max_cooldown=self.breaker_max_cooldown,
        )

    def secrets(self) -> list[str]:
        """Every key, for log redaction."""
        return [k for k in (self.anthropic_api_key, self.openai_api_key,
                            self.deepgram_api_key) if k]  # fmt: skip


def _unknown(stage: str, name: str, known: tuple[str, ...]) -> ValueError:
    return ValueError(f"unknown {stage} provider {name!r}; use local or one of {', '.join(known)}")


def _missing(stage: str, name: str) -> None:
    log.warning("%s provider %s skipped: no API key", stage, name,
                extra={"stage": stage, "provider": name})  # fmt: skip


def build_cloud_stt(name: str, cfg: ProviderConfig) -> Any | None:
    if name == "deepgram":
        if not cfg.deepgram_api_key:
            return _missing("stt", name)
        from pipelines.stt.deepgram import DeepgramSTT

        return DeepgramSTT(
            cfg.deepgram_api_key,
            model=cfg.deepgram_stt_model,
            base_url=cfg.deepgram_base_url,
            endpointing_ms=cfg.deepgram_endpointing_ms,
            connect_timeout=cfg.connect_timeout,
            finalize_timeout=cfg.first_byte_timeout,
            keepalive_s=cfg.deepgram_keepalive_s,
        )
    if name == "openai":
        if not cfg.openai_api_key:
            return _missing("stt", name)
        from pipelines.stt.openai import OpenAISTT

        return OpenAISTT(
            cfg.openai_api_key,
            model=cfg.openai_stt_model,
            base_url=cfg.openai_base_url,
            connect_timeout=cfg.connect_timeout,
            idle_timeout=cfg.idle_timeout,
        )
    raise _unknown("stt", name, CLOUD_STT)


def build_cloud_llm(name: str, cfg: ProviderConfig) -> Any | None:
    if name == "anthropic":
        if not cfg.anthropic_api_key:
            return _missing("llm", name)
        from pipelines.llm.anthropic import AnthropicLLM

        return AnthropicLLM(
            cfg.anthropic_api_key,
            model=cfg.anthropic_model,
            base_url=cfg.anthropic_base_url,
            max_tokens=cfg.llm_max_tokens,
            connect_timeout=cfg.connect_timeout,
            idle_timeout=cfg.idle_timeout,
        )
    if name == "openai":
        if not cfg.openai_api_key:
            return _missing("llm", name)
        from pipelines.llm.openai import OpenAILLM

        return OpenAILLM(
            cfg.openai_api_key,
            model=cfg.openai_model,
            base_url=cfg.openai_base_url,
            max_tokens=cfg.llm_max_tokens,
            connect_timeout=cfg.connect_timeout,
            idle_timeout=cfg.idle_timeout,
        )
    raise _unknown("llm", name, CLOUD_LLM)


def build_cloud_tts(name: str, cfg: ProviderConfig) -> Any | None:
    if name == "deepgram":
        if not cfg.deepgram_api_key:
            return _missing("tts", name)
        from pipelines.tts.deepgram import DeepgramTTS

        return DeepgramTTS(
            cfg.deepgram_api_key,
            model=cfg.deepgram_tts_model,
            base_url=cfg.deepgram_base_url,
            sample_rate=cfg.deepgram_tts_sample_rate,
            connect_timeout=cfg.connect_timeout,
            idle_timeout=cfg.idle_timeout,
        )
    if name == "openai":
        if not cfg.openai_api_key:
            return _missing("tts", name)
        from pipelines.tts.openai import OpenAITTS

        return OpenAITTS(
            cfg.openai_api_key,
            model=cfg.openai_tts_model,
            voice=cfg.openai_tts_voice,
            base_url=cfg.openai_base_url,
            connect_timeout=cfg.connect_timeout,
            idle_timeout=cfg.idle_timeout,
        )
    raise _unknown("tts", name, CLOUD_TTS)


BUILDERS = {"stt": build_cloud_stt, "llm": build_cloud_llm, "tts": build_cloud_tts}


def build_chain(stage: str, providers: list[Any], cfg: ProviderConfig, observer: Any = None) -> Any:
    """The stage's chain over `providers` (in order), with `cfg`'s timeouts and breakers."""
    from pipelines.chain import LLMChain, STTChain, TTSChain

    cls = {"stt": STTChain, "llm": LLMChain, "tts": TTSChain}[stage]
    return cls(providers, cfg.policy(), observer)

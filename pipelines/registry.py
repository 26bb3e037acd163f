"""Build the providers of each stage from names, in the order of the configured chain.

`local` is the embedded default of each stage (Whisper, the learning coach, Piper).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pipelines.cloud import BUILDERS, ProviderConfig, build_chain
from pipelines.executor import ModelExecutor
from pipelines.ports import SessionObserver
from pipelines.providers import LanguageModel, SpeechToText, TextToSpeech

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    stt_chain: tuple[str, ...] = ("local",)
    llm_chain: tuple[str, ...] = ("local",)
    tts_chain: tuple[str, ...] = ("local",)
    whisper_model: str = ""
    whisper_threads: int = 1
    piper_voice: str = ""
    interim_interval_s: float = 0.7
    keys: dict[str, str] = field(default_factory=dict)
    #: Models, endpoints, timeouts and breakers of the cloud providers (keys from `keys`
    #: when its own are empty).
    cloud: ProviderConfig = field(default_factory=ProviderConfig)

    def cloud_config(self) -> ProviderConfig:
        from dataclasses import replace

        c = self.cloud
        return replace(
            c,
            anthropic_api_key=c.anthropic_api_key or self.keys.get("anthropic", ""),
            openai_api_key=c.openai_api_key or self.keys.get("openai", ""),
            deepgram_api_key=c.deepgram_api_key or self.keys.get("deepgram", ""),
        )


@dataclass(slots=True)
class Providers:
    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech

    async def warm_up(self) -> None:
        """Load embedded models ahead of the first turn (no-op for remote providers)."""
        for provider in (self.stt, self.llm, self.tts):
            warm = getattr(provider, "warm_up", None)
            if warm is not None:
                await warm()

    def status(self) -> dict[str, list[dict[str, object]]]:
        """Circuit-breaker state per provider of each chained stage (for health)."""
        out: dict[str, list[dict[str, object]]] = {}
        for stage, provider in (("stt", self.stt), ("llm", self.llm), ("tts", self.tts)):
            status = getattr(provider, "status", None)
            if status is not None:
                out[stage] = status()
        return out

    async def aclose(self) -> None:
        """Close cloud clients (connection pools) on shutdown."""
        for provider in (self.stt, self.llm, self.tts):
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()


def _local_stt(cfg: ProviderSettings, executor: ModelExecutor) -> SpeechToText:
    from pipelines.stt.whisper import WhisperModelHolder, WhisperSTT

    holder = WhisperModelHolder(cfg.whisper_model, cfg.whisper_threads)
    return WhisperSTT(holder, executor, cfg.interim_interval_s)


def _local_llm(cfg: ProviderSettings, executor: ModelExecutor) -> LanguageModel:
    from pipelines.llm.coach import LearningCoach

    return LearningCoach()


def _local_tts(cfg: ProviderSettings, executor: ModelExecutor) -> TextToSpeech:
    from pipelines.tts.piper import PiperTTS, PiperVoiceHolder

    return PiperTTS(PiperVoiceHolder(cfg.piper_voice), executor)


_LOCAL = {"stt": _local_stt, "llm": _local_llm, "tts": _local_tts}


def _simulated(stage: str, names: tuple[str, ...]) -> Any:
    """Fixed-delay providers for load tests and demos only (`pipelines/*/simulated.py`)."""
    if names != ("simulated",):
        raise ValueError(f"{stage.upper()}_PROVIDERS: simulated cannot be chained")
    if stage == "stt":
        from pipelines.stt.simulated import SimulatedSTT

        return SimulatedSTT()
    if stage == "llm":
        from pipelines.llm.simulated import SimulatedLLM

        return SimulatedLLM()
    from pipelines.tts.simulated import SimulatedTTS

    return SimulatedTTS()


def _stage(
    stage: str,
    names: tuple[str, ...],
    cfg: ProviderSettings,
    cloud: ProviderConfig,
    executor: ModelExecutor,
    observer: SessionObserver | None,
) -> Any:
    """The stage's provider: the local one alone as before, or a fallback chain over every
    configured provider whose key is set (in the configured order)."""
    if "simulated" in names:
        return _simulated(stage, names)
    providers = [
        _LOCAL[stage](cfg, executor) if name == "local" else BUILDERS[stage](name, cloud)
        for name in names
    ]
    usable = [p for p in providers if p is not None]
    if not usable:
        raise ValueError(f"{stage.upper()}_PROVIDERS={','.join(names)}: no provider has its key")
    if names == ("local",):
        return usable[0]
    return build_chain(stage, usable, cloud, observer)


def build_providers(
    cfg: ProviderSettings, executor: ModelExecutor, observer: SessionObserver | None = None
) -> Providers:
    cloud = cfg.cloud_config()
    return Providers(
        stt=_stage("stt", cfg.stt_chain, cfg, cloud, executor, observer),
        llm=_stage("llm", cfg.llm_chain, cfg, cloud, executor, observer),
        tts=_stage("tts", cfg.tts_chain, cfg, cloud, executor, observer),
    )

"""Build the providers of each stage from names, in the order of the configured chain.

`local` is the embedded default of each stage (Whisper, the learning coach, Piper).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pipelines.executor import ModelExecutor
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


def build_providers(cfg: ProviderSettings, executor: ModelExecutor) -> Providers:
    for stage, chain in (("stt", cfg.stt_chain), ("llm", cfg.llm_chain), ("tts", cfg.tts_chain)):
        unknown = [name for name in chain if name != "local"]
        if unknown:
            raise ValueError(f"unknown {stage} provider(s): {', '.join(unknown)}")
    return Providers(
        stt=_local_stt(cfg, executor),
        llm=_local_llm(cfg, executor),
        tts=_local_tts(cfg, executor),
    )

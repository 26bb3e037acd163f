"""What every cloud provider and chain shares: timeouts, retries and breakers
(`ProviderConfig`), and the chain over a stage's providers (`build_chain`).

`server` maps its PROVIDER_*/BREAKER_* settings onto `ProviderConfig`, so `pipelines`
never imports `server`. Each provider's own settings (keys, models, endpoints) are
declared in its file (`pipelines.provider_spec`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.chain import ChainPolicy


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    connect_timeout: float = 1.5
    first_byte_timeout: float = 2.5
    idle_timeout: float = 10.0
    retries: int = 1
    breaker_failures: int = 3
    breaker_cooldown: float = 30.0
    breaker_max_cooldown: float = 300.0
    context_max_chars: int = 12000

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
            context_max_chars=self.context_max_chars,
        )


def build_chain(stage: str, providers: list[Any], cfg: ProviderConfig, observer: Any = None) -> Any:
    """The stage's chain over `providers` (in order), with `cfg`'s timeouts and breakers."""
    from pipelines.chain import LLMChain, STTChain, TTSChain

    cls = {"stt": STTChain, "llm": LLMChain, "tts": TTSChain}[stage]
    return cls(providers, cfg.policy(), observer)

"""What a provider chain is made of: its policy (timeouts, retries, breakers) and its
members (a provider with its own circuit breaker).

The fallback engine (`pipelines.fallback`) and the chains of every stage
(`pipelines.chain`, `pipelines.chain_stt`) all need these, so they live apart from each of
them and no chain module has to import another one back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines import resilience as rz

#: How much longer the last usable provider of a chain may take to its first output:
#: nothing comes after it, so giving up sooner would only turn a slow answer into none.
LAST_RESORT_FACTOR = 4.0


@dataclass(frozen=True, slots=True)
class ChainPolicy:
    first_byte_timeout: float = 2.5
    idle_timeout: float = 10.0
    #: End of utterance -> final transcript, per STT provider.
    finalize_timeout: float = 2.5
    #: Opening a streaming STT connection.
    open_timeout: float = 2.0
    retries: int = 1
    breaker_failures: int = 3
    breaker_cooldown: float = 30.0
    breaker_max_cooldown: float = 300.0
    #: Characters of history plus user text one LLM request may carry (context_budget).
    context_max_chars: int = 12000


@dataclass(slots=True, eq=False)
class Member:
    """One provider of a chain and its breaker. A chain serves every session of the
    process, so the breaker sees every session's calls."""

    provider: Any
    breaker: rz.CircuitBreaker

    @property
    def name(self) -> str:
        return str(self.provider.name)


def members_of(
    providers: Sequence[Any], policy: ChainPolicy, clock: Callable[[], float] = time.monotonic
) -> list[Member]:
    """One member per provider, in chain order, each with a breaker of its own."""
    p = policy
    return [
        Member(prov, rz.CircuitBreaker(p.breaker_failures, p.breaker_cooldown,
                                       p.breaker_max_cooldown, clock))
        for prov in providers
    ]  # fmt: skip

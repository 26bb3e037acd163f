"""What the engine needs from the outside world, as Protocols.

The server supplies implementations (in-memory or Redis sessions; SQLite or Postgres
captures); the engine only sees these shapes, so `pipelines` never imports `server`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True, frozen=True)
class Exchange:
    """One user turn and the agent's reply, as the agent remembers it."""

    user: str
    agent: str
    timestamp: float


@dataclass(slots=True, frozen=True)
class Capture:
    """A finished exchange on its way to durable storage and the search index."""

    session_id: str
    user_text: str
    agent_text: str
    timestamp: float
    metadata: dict[str, Any] = field(default_factory=dict)
    # Idempotency key: a capture written twice (journal replay) is stored once.
    capture_id: str = ""
    # The learner who owns the exchange; empty = whoever owns the session.
    learner_id: str = ""


class SessionStore(Protocol):
    """Conversation state that must survive a reconnect (and, with Redis, an instance)."""

    async def get_context(self, session_id: str) -> list[Exchange]:
        """The most recent exchanges, oldest first (empty for a new session)."""
        ...

    async def append_exchange(self, session_id: str, exchange: Exchange) -> None:
        """Append, trim to the configured maximum, refresh TTL and last activity."""
        ...

    async def touch(self, session_id: str) -> None:
        """Refresh the TTL of a live session that is not producing exchanges."""
        ...


class CaptureSink(Protocol):
    """Accepts finished exchanges without blocking the caller."""

    def submit(self, capture: Capture) -> None: ...


class SessionObserver(Protocol):
    """Where a Session reports what it measured (metrics live in `admin`, not here)."""

    def turn_completed(self, stages: dict[str, float], mode: str) -> None:
        """Per-turn stage latencies in seconds, e.g. {"stt_final": .2, "first_audio": .7}."""
        ...

    def provider_error(self, stage: str, provider: str, kind: str) -> None: ...

    def provider_fallback(self, stage: str, from_provider: str, to_provider: str) -> None: ...

    def provider_latency(self, stage: str, provider: str, seconds: float) -> None:
        """Time the provider that served a call took to its first output (STT final
        transcript, LLM first token, TTS first audio): per call, so it names who served it."""
        ...

    def work_time(self, stage: str, seconds: float) -> None:
        """CPU-bound work time (vad, stt, tts) for the work-time counters."""
        ...


class NullObserver:
    def turn_completed(self, stages: dict[str, float], mode: str) -> None:
        pass

    def provider_error(self, stage: str, provider: str, kind: str) -> None:
        pass

    def provider_fallback(self, stage: str, from_provider: str, to_provider: str) -> None:
        pass

    def provider_latency(self, stage: str, provider: str, seconds: float) -> None:
        pass

    def work_time(self, stage: str, seconds: float) -> None:
        pass


def render_history(history: Sequence[Exchange]) -> list[dict[str, str]]:
    """History as chat messages (user/assistant alternating), oldest first."""
    messages: list[dict[str, str]] = []
    for ex in history:
        messages.append({"role": "user", "content": ex.user})
        messages.append({"role": "assistant", "content": ex.agent})
    return messages

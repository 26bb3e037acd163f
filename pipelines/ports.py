"""What the engine needs from the outside world, as Protocols.

The server supplies implementations (in-memory or Redis sessions; SQLite or Postgres
captures); the engine only sees these shapes, so `pipelines` never imports `server`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


@dataclass(slots=True, frozen=True)
class TurnTrace:
    """When each stage of one finished turn happened, for a tracer: clock marks and ids,
    never the words.

    `marks` are times on the session's clock (monotonic seconds), as far as the turn got:
    `speech_start` (the caller began: `talk_start`, or the VAD's start less the voiced audio
    it needed), `speech_end` (the caller's last voiced audio), `endpoint` (the turn was
    judged over), `stt_final`, `llm_request`, `llm_first_token`, `llm_done`, `tts_request`,
    `tts_done` (the last audio synthesized), `first_audio` (the first chunk released),
    `playout_end` (the last chunk released plus its duration, or the interruption),
    `interrupted`, `capture_start` and `capture_handoff` (the capture given to the writer).
    A typed turn has no `speech_start` or `endpoint`.
    """

    session_id: str
    turn_id: int
    mode: str
    marks: Mapping[str, float]
    #: Seconds to add to a mark to get seconds since the epoch (taken once per turn).
    epoch_offset: float
    interrupted: bool
    #: The reply was started during a pause, before the turn ended, and then released.
    speculative: bool = False
    #: The session's provider by stage ("stt", "llm", "tts"): its name, or its chain's.
    providers: Mapping[str, str] = field(default_factory=dict)


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

    def audio_dropped(self, seconds: float) -> None:
        """A client sent audio faster than real time allows; `seconds` of it were dropped."""
        ...

    def turn_finished(self, turn: TurnTrace) -> None:
        """Once per recorded turn (answered or interrupted), after its capture was handed
        to the writer: when each of its stages happened (for traces)."""
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

    def audio_dropped(self, seconds: float) -> None:
        pass

    def turn_finished(self, turn: TurnTrace) -> None:
        pass


def render_history(history: Sequence[Exchange]) -> list[dict[str, str]]:
    """History as chat messages (user/assistant alternating), oldest first."""
    messages: list[dict[str, str]] = []
    for ex in history:
        messages.append({"role": "user", "content": ex.user})
        messages.append({"role": "assistant", "content": ex.agent})
    return messages

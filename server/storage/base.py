"""Storage Protocols: sessions, captures and search, each with an embedded default
(in-memory / SQLite) and a production implementation (Redis / Postgres)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pipelines.ports import Capture, Exchange, SessionStore

__all__ = [
    "Capture",
    "CaptureStats",
    "CaptureStore",
    "Exchange",
    "SearchHit",
    "SearchQuery",
    "SessionAdmin",
    "SessionStore",
    "StoredCapture",
]


@dataclass(slots=True, frozen=True)
class StoredCapture:
    id: int
    session_id: str
    timestamp: float
    user_text: str
    agent_text: str
    metadata: dict[str, object]


@dataclass(slots=True, frozen=True)
class SearchQuery:
    query: str
    limit: int = 10
    session_id: str | None = None
    since: float | None = None
    until: float | None = None


@dataclass(slots=True, frozen=True)
class SearchHit:
    id: int
    session_id: str
    timestamp: float
    user_text: str
    agent_text: str
    snippet: str
    score: float


@dataclass(slots=True, frozen=True)
class CaptureStats:
    total_captures: int
    total_sessions: int
    captures_last_24h: int
    last_capture_at: float | None


class SessionAdmin(Protocol):
    """Operator-facing view of the session store (never exposes other users' contexts)."""

    async def count_active(self) -> int: ...

    async def delete(self, session_id: str) -> None:
        """Forget a session's context everywhere (raises if that cannot be done)."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class CaptureStore(Protocol):
    """Durable captures plus search over them."""

    name: str

    async def start(self) -> None:
        """Connect, create or migrate the schema."""
        ...

    async def write_batch(self, captures: Sequence[Capture]) -> None:
        """Write all or raise; idempotent on `Capture.capture_id`."""
        ...

    async def history(self, session_id: str, limit: int) -> list[StoredCapture]: ...

    async def search(self, query: SearchQuery) -> list[SearchHit]: ...

    async def stats(self) -> CaptureStats: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...

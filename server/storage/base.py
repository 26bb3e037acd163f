"""Storage Protocols: sessions, captures and search, each with an embedded default
(in-memory / SQLite) and a production implementation (Redis / Postgres)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pipelines.ports import Capture, Exchange, SessionStore

__all__ = [
    "LEGACY_LEARNER",
    "Capture",
    "CaptureStats",
    "CaptureStore",
    "Exchange",
    "SearchHit",
    "SearchQuery",
    "SessionAdmin",
    "SessionStore",
    "SessionSummary",
    "StoredCapture",
]

# Owner of everything stored before captures had learners (set by the migrations, and by
# the journal for lines written before the field existed).
LEGACY_LEARNER = "legacy"


@dataclass(slots=True, frozen=True)
class StoredCapture:
    id: int
    session_id: str
    timestamp: float
    user_text: str
    agent_text: str
    metadata: dict[str, object]
    learner_id: str = LEGACY_LEARNER


@dataclass(slots=True, frozen=True)
class SearchQuery:
    query: str
    limit: int = 10
    session_id: str | None = None
    since: float | None = None
    until: float | None = None
    # Whose captures to search. None searches every learner: for operators only; a
    # learner-facing route always passes the caller's id.
    learner_id: str | None = None


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
class SessionSummary:
    """One of a learner's sessions, for the list a learner picks from."""

    session_id: str
    learner_id: str
    title: str  # the first thing the learner said, at most 80 characters ("" if nothing yet)
    created_at: float
    last_at: float  # the newest capture's time, or created_at for a session without one
    captures: int


@dataclass(slots=True, frozen=True)
class CaptureStats:
    total_captures: int
    total_sessions: int
    captures_last_24h: int
    last_capture_at: float | None


class SessionAdmin(Protocol):
    """Operator-facing view of the session store (never exposes other users' contexts)."""

    async def count_active(self) -> int: ...

    async def exists(self, session_id: str) -> bool:
        """Whether the session has context (raises if the store cannot say)."""
        ...

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

    async def search(self, query: SearchQuery) -> list[SearchHit]:
        """Ranked hits; only `query.learner_id`'s captures when it is set."""
        ...

    # --- ownership (a session belongs to the learner who claimed it first) -------------
    async def claim_session(self, session_id: str, learner_id: str) -> str:
        """Record `learner_id` as the owner unless the session has one; return the owner.

        Atomic: of two learners claiming one id at once, both get the same answer. A
        deleted session stays owned by whoever owned it (its id is never handed out again)."""
        ...

    async def session_owner(self, session_id: str) -> str | None:
        """The learner who owns the session, or None if nobody has claimed it."""
        ...

    async def list_sessions(self, learner_id: str, limit: int) -> list[SessionSummary]:
        """The learner's sessions, most recent activity first."""
        ...

    async def learner_history(self, learner_id: str, limit: int) -> list[StoredCapture]:
        """The learner's most recent `limit` captures across sessions, oldest first."""
        ...

    # --- erasure ------------------------------------------------------------------------
    async def delete_session(self, session_id: str) -> int:
        """Delete the session's captures, index entries and row; tombstone the id so a
        capture of it written later (a journal replay, another instance) is dropped.
        Returns the number of captures deleted."""
        ...

    async def forget_learner(self, learner_id: str) -> int:
        """`delete_session` for every session of the learner, and refuse their captures
        from now on. Returns the number of captures deleted."""
        ...

    async def is_forgotten(self, learner_id: str) -> bool:
        """Whether `forget_learner` was called for this id (one indexed lookup)."""
        ...

    async def delete_older_than(self, timestamp: float) -> int:
        """Retention: delete captures older than `timestamp` (epoch seconds). Sessions keep
        their owner (an emptied id cannot be claimed by someone else). Returns captures
        deleted."""
        ...

    async def stats(self) -> CaptureStats: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...

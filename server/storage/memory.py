"""In-process session store: the embedded default when `REDIS_URL` is unset.

Sessions live in an `OrderedDict` kept in least-recently-active order, so expiry is a
walk from the front that stops at the first live session: a sweep costs only what it
evicts. The dict is bounded (`max_sessions`); past the bound the least recently active
session is forgotten first, so a flood of new session ids cannot grow memory without limit.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from pipelines.ports import Exchange


@dataclass(slots=True)
class _Session:
    created_at: float
    last_activity: float
    exchanges: deque[Exchange]
    exchange_count: int = 0


class MemorySessionStore:
    """SessionStore + SessionAdmin held in this process (lost on restart, not shared)."""

    name = "memory"

    def __init__(
        self,
        ttl_seconds: int,
        max_exchanges: int,
        clock: Callable[[], float] = time.monotonic,
        max_sessions: int = 100_000,
    ) -> None:
        if ttl_seconds <= 0 or max_exchanges <= 0 or max_sessions <= 0:
            raise ValueError("ttl_seconds, max_exchanges and max_sessions must be positive")
        self._ttl = float(ttl_seconds)
        self._max_exchanges = max_exchanges
        self._max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        #: Deleted session ids and until when their appends are dropped (a turn still in
        #: flight must not bring a deleted context back).
        self._deleted: OrderedDict[str, float] = OrderedDict()

    # --- SessionStore ----------------------------------------------------------------
    async def get_context(self, session_id: str) -> list[Exchange]:
        session = self._live(session_id)
        return list(session.exchanges) if session else []

    async def append_exchange(self, session_id: str, exchange: Exchange) -> None:
        now = self._clock()
        if self._is_deleted(session_id, now):
            return
        session = self._live_or_new(session_id, now)
        session.exchanges.append(exchange)
        session.exchange_count += 1
        self._refresh(session_id, session, now)

    async def touch(self, session_id: str) -> None:
        # A live connection that has not spoken yet still counts as an active session.
        now = self._clock()
        if self._is_deleted(session_id, now):
            return
        self._refresh(session_id, self._live_or_new(session_id, now), now)

    async def exists(self, session_id: str) -> bool:
        """Whether the session has live context."""
        return self._live(session_id) is not None

    async def delete(self, session_id: str) -> None:
        """Forget the session's context (the learner deleted it)."""
        self._sessions.pop(session_id, None)
        self._deleted[session_id] = self._clock() + self._ttl
        self._deleted.move_to_end(session_id)
        while len(self._deleted) > self._max_sessions:
            self._deleted.popitem(last=False)

    def _is_deleted(self, session_id: str, now: float) -> bool:
        until = self._deleted.get(session_id)
        if until is None:
            return False
        if now < until:
            return True
        del self._deleted[session_id]
        return False

    # --- SessionAdmin ----------------------------------------------------------------
    async def count_active(self) -> int:
        self._sweep(self._clock())
        return len(self._sessions)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._sessions.clear()

    # --- extras used by the history route and tests ------------------------------------
    async def info(self, session_id: str) -> dict[str, float] | None:
        """Created/last-activity (monotonic clock) and exchange count, or None if unknown."""
        session = self._live(session_id)
        if session is None:
            return None
        return {
            "created_at": session.created_at,
            "last_activity": session.last_activity,
            "exchange_count": float(session.exchange_count),
        }

    # --- internals -------------------------------------------------------------------
    def _live(self, session_id: str, now: float | None = None) -> _Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock() if now is None else now
        if now - session.last_activity >= self._ttl:
            del self._sessions[session_id]
            return None
        return session

    def _live_or_new(self, session_id: str, now: float) -> _Session:
        """The live session, or a new empty one (expired ones swept, the bound kept)."""
        self._sweep(now)
        session = self._live(session_id, now)
        if session is None:
            session = _Session(now, now, deque(maxlen=self._max_exchanges))
            self._sessions[session_id] = session
            self._enforce_bound()
        return session

    def _refresh(self, session_id: str, session: _Session, now: float) -> None:
        session.last_activity = now
        self._sessions.move_to_end(session_id)

    def _sweep(self, now: float) -> None:
        """Evict expired sessions from the least recently active end; stops at a live one."""
        while self._sessions:
            oldest_id, oldest = next(iter(self._sessions.items()))
            if now - oldest.last_activity < self._ttl:
                return
            del self._sessions[oldest_id]

    def _enforce_bound(self) -> None:
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)

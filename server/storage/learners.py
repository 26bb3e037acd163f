"""Rules about learners and their sessions that both capture stores apply the same way.

The SQL here is written once for both stores, in the subset SQLite and Postgres share,
with Postgres placeholders ($1); the SQLite store turns them into its own (?1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from server.storage.base import LEGACY_LEARNER, Capture, SessionSummary, StoredCapture

TITLE_CHARS = 80
LEARNER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

# The session's owner; a deleted session stays its former owner's.
OWNER = (
    "SELECT learner_id FROM sessions WHERE session_id = $1 UNION ALL "
    "SELECT learner_id FROM deleted_sessions WHERE session_id = $1 AND learner_id IS NOT NULL "
    "LIMIT 1"
)
IS_FORGOTTEN = "SELECT EXISTS (SELECT 1 FROM forgotten_learners WHERE learner_id = $1)"
FORGET_LEARNER = (
    "INSERT INTO forgotten_learners (learner_id) VALUES ($1) ON CONFLICT (learner_id) DO NOTHING"
)
# Tombstones. The one for a session is written even for an id never seen, so that a
# capture still on its way (another instance's journal) is refused all the same.
# (`WHERE true`: SQLite needs a WHERE before an upsert's ON CONFLICT.)
TOMBSTONE_SESSION = (
    "INSERT INTO deleted_sessions (session_id, learner_id) "
    "SELECT $1, coalesce((SELECT learner_id FROM sessions WHERE session_id = $1), "
    "(SELECT learner_id FROM captures WHERE session_id = $1 LIMIT 1)) WHERE true "
    "ON CONFLICT (session_id) DO NOTHING"
)
TOMBSTONE_LEARNER = (
    "INSERT INTO deleted_sessions (session_id, learner_id) "
    "SELECT session_id, learner_id FROM sessions WHERE learner_id = $1 UNION "
    "SELECT session_id, learner_id FROM captures WHERE learner_id = $1 "
    "ON CONFLICT (session_id) DO NOTHING"
)


def for_sqlite(sql: str) -> str:
    """Postgres placeholders ($1) as SQLite numbered ones (?1)."""
    return re.sub(r"\$(\d+)", r"?\1", sql)


def check_learner_id(learner_id: str) -> str:
    """The id itself, or ValueError: ids reach SQL only as parameters, but an id that no
    identity scheme issues is a caller's bug better stopped before it owns anything."""
    if not isinstance(learner_id, str) or LEARNER_ID.fullmatch(learner_id) is None:
        raise ValueError(f"invalid learner id: {learner_id!r}")
    return learner_id


def claimant(capture: Capture) -> str:
    """Who a capture claims its session for when the session has no owner yet.

    A capture without a learner (a caller that does not know it) inherits the session's
    owner when there is one, and otherwise makes the session a legacy one."""
    return capture.learner_id or LEGACY_LEARNER


def session_title(stored: str | None, first_user_text: str | None) -> str:
    """The title a session is listed under: its own if set, else what the learner said
    first, on one line and cut to TITLE_CHARS characters."""
    text = stored if stored else (first_user_text or "")
    return " ".join(text.split())[:TITLE_CHARS]


def session_summary(row: Sequence[Any]) -> SessionSummary:
    """A SessionSummary from (session_id, learner_id, title, created_at, last_at,
    captures, first user text), the column order both stores' list queries return."""
    created = float(row[3])
    last = created if row[4] is None else float(row[4])
    return SessionSummary(
        session_id=row[0],
        learner_id=row[1],
        title=session_title(row[2], row[6]),
        created_at=created,
        last_at=last,
        captures=int(row[5]),
    )


class LearnerQueries:
    """The CaptureStore methods that are the same on both stores, over primitives each
    store provides in its own dialect (`_scalar` and `_rows` take the shared SQL above)."""

    list_sessions_sql: str  # the store's query, returning session_summary's columns

    async def session_owner(self, session_id: str) -> str | None:
        return await self._scalar(OWNER, session_id)

    async def is_forgotten(self, learner_id: str) -> bool:
        return bool(await self._scalar(IS_FORGOTTEN, learner_id))

    async def list_sessions(self, learner_id: str, limit: int) -> list[SessionSummary]:
        return [
            session_summary(r) for r in await self._rows(self.list_sessions_sql, learner_id, limit)
        ]

    async def history(self, session_id: str, limit: int) -> list[StoredCapture]:
        """The session's most recent `limit` captures, oldest first."""
        return await self._newest_first("session_id", session_id, limit)

    async def learner_history(self, learner_id: str, limit: int) -> list[StoredCapture]:
        """The learner's most recent `limit` captures, oldest first."""
        return await self._newest_first("learner_id", learner_id, limit)

    async def delete_session(self, session_id: str) -> int:
        return await self._erase_sessions([TOMBSTONE_SESSION], "session_id", session_id)

    async def forget_learner(self, learner_id: str) -> int:
        check_learner_id(learner_id)
        first = [FORGET_LEARNER, TOMBSTONE_LEARNER]
        return await self._erase_sessions(first, "learner_id", learner_id)

    # --- what each store provides ------------------------------------------------------
    async def _scalar(self, sql: str, *args: Any) -> Any:
        """The first column of the first row (None for no row)."""
        raise NotImplementedError

    async def _rows(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        raise NotImplementedError

    async def _newest_first(self, column: str, value: str, limit: int) -> list[StoredCapture]:
        """The most recent `limit` captures whose `column` is `value`, oldest first."""
        raise NotImplementedError

    async def _erase_sessions(self, first: list[str], column: str, value: str) -> int:
        """In one transaction that no capture batch overlaps: run the `first` statements
        (tombstones; $1 = value), then delete the session rows and the captures (with
        their index entries) whose `column` is `value`. Returns the captures deleted."""
        raise NotImplementedError

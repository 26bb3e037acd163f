"""Deleting what a learner said: one session, everything of one learner, or everything
older than the retention period.

A deletion reaches every place the words live: the capture store (captures, their
full-text and vector index entries; a tombstone so that a copy written later by another
instance or a replayed journal is dropped), the session context (Redis or memory), this
process's capture queue and disk journal, and a live conversation of that session on this
instance (closed first, so that what it records as it ends is deleted too). A conversation
live on another instance at that moment stores no capture (the tombstone), but keeps its
context in memory until it ends. Each deletion is logged without content and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from server.identity.learners import Identity
from server.lifecycle import Lifecycle
from server.storage.factory import Storage

log = logging.getLogger(__name__)

#: Close code for a live conversation whose session was just deleted (docs/protocol.md).
CLOSE_DELETED = 4410
#: Sessions of one learner handled by one "forget me" (far more than a person makes).
MAX_SESSIONS_PER_LEARNER = 100_000

#: Told (kind, captures deleted) after each deletion: "session", "learner" or "retention".
Counter = Callable[[str, int], None]


class Erasure:
    def __init__(
        self, storage: Storage, identity: Identity, lifecycle: Lifecycle, count: Counter
    ) -> None:
        self._storage = storage
        self._identity = identity
        self._lifecycle = lifecycle
        self._count = count

    async def delete_session(self, session_id: str) -> int:
        storage = self._storage
        # A live conversation first: as it ends it records what it had, which goes next.
        await self._lifecycle.end_sessions({session_id}, CLOSE_DELETED, "session deleted")
        await storage.writer.forget(session_id=session_id)
        deleted = await storage.captures.delete_session(session_id)
        await storage.sessions.delete(session_id)
        log.info("session deleted", extra={"session_id": session_id, "captures": deleted})
        self._count("session", deleted)
        return deleted

    async def forget_learner(self, learner_id: str) -> int:
        storage = self._storage
        sessions = await storage.captures.list_sessions(learner_id, MAX_SESSIONS_PER_LEARNER)
        ids = {s.session_id for s in sessions}
        await self._lifecycle.end_sessions(ids, CLOSE_DELETED, "learner deleted")
        await storage.writer.forget(learner_id=learner_id)
        deleted = await storage.captures.forget_learner(learner_id)
        # Only now, with the deletion committed, are their credentials refused: a failure
        # before this point leaves the learner able to ask again.
        self._identity.forget(learner_id)
        for session_id in ids:
            await storage.sessions.delete(session_id)
        log.info("learner forgotten", extra={"sessions": len(ids), "captures": deleted})
        self._count("learner", deleted)
        return deleted

    async def apply_retention(self, days: int, now: float | None = None) -> int:
        cutoff = (time.time() if now is None else now) - days * 86400
        deleted = await self._storage.captures.delete_older_than(cutoff)
        if deleted:
            log.info("retention deleted old captures", extra={"captures": deleted, "days": days})
        self._count("retention", deleted)
        return deleted


async def retention_loop(erasure: Erasure, days: int, interval_s: float = 3600.0) -> None:
    """Apply `CAPTURE_RETENTION_DAYS` now and then every `interval_s`, for the app's life."""
    while True:
        try:
            await erasure.apply_retention(days)
        except Exception as exc:  # the store is down: try again at the next interval
            log.warning("retention could not run: %s", type(exc).__name__)
        await asyncio.sleep(interval_s)

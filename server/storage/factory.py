"""Builds the storage a process runs on from settings, and closes it in the right order.

Sessions: Redis when `REDIS_URL` is set, otherwise in memory. Captures: Postgres when
`DATABASE_URL` is set, otherwise SQLite at `DATABASE_PATH`. The capture writer (batching
plus the disk journal) sits in front of either capture store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from server.settings import Settings
from server.storage.base import CaptureStore
from server.storage.memory import MemorySessionStore
from server.storage.sqlite import SQLiteCaptureStore
from server.storage.writer import CaptureWriter, default_journal_dir

log = logging.getLogger(__name__)


@dataclass
class Storage:
    """What handlers and the engine reach through `app[STORAGE]`."""

    sessions: Any  # SessionStore & SessionAdmin (MemorySessionStore or RedisSessionStore)
    captures: CaptureStore
    writer: CaptureWriter


async def open_storage(settings: Settings) -> Storage:
    sessions = MemorySessionStore(settings.session_ttl_seconds, settings.context_max_exchanges)
    captures: CaptureStore = SQLiteCaptureStore(settings.database_path)
    await captures.start()
    journal_dir = settings.capture_journal_dir or default_journal_dir(settings.database_path)
    writer = CaptureWriter(
        captures,
        batch_size=settings.capture_batch_size,
        flush_ms=settings.capture_flush_ms,
        queue_max=settings.capture_queue_max,
        journal_dir=journal_dir,
        journal_max_bytes=settings.capture_journal_max_mb * 1024 * 1024,
    )
    await writer.start()
    log.info(
        "storage ready",
        extra={"sessions": sessions.name, "captures": captures.name, "journal": journal_dir},
    )
    return Storage(sessions=sessions, captures=captures, writer=writer)


async def close_storage(storage: Storage) -> None:
    """Writer first (its flush needs the stores), then the stores."""
    try:
        await storage.writer.close()
    finally:
        try:
            await storage.captures.close()
        finally:
            await storage.sessions.close()

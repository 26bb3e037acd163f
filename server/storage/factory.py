"""Builds the storage a process runs on from settings, and closes it in the right order.

Sessions: Redis when `REDIS_URL` is set, otherwise in memory. Captures: Postgres when
`DATABASE_URL` is set, otherwise SQLite at `DATABASE_PATH`. The capture writer (batching
plus the disk journal) sits in front of either capture store.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from server.settings import ConfigError, Settings
from server.storage.base import CaptureStore
from server.storage.embedder import Embedder, default_embedder
from server.storage.hybrid import HybridStore
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
    sessions = await _open_sessions(settings)
    try:
        captures = await _open_captures(settings)
    except BaseException:
        await sessions.close()
        raise
    journal_dir = settings.capture_journal_dir or default_journal_dir(settings.database_path)
    writer = CaptureWriter(
        captures,
        batch_size=settings.capture_batch_size,
        flush_ms=settings.capture_flush_ms,
        queue_max=settings.capture_queue_max,
        journal_dir=journal_dir,
        journal_max_bytes=settings.capture_journal_max_mb * 1024 * 1024,
    )
    try:
        await writer.start()
    except BaseException:
        await captures.close()
        await sessions.close()
        raise
    log.info(
        "storage ready",
        extra={"sessions": sessions.name, "captures": captures.name, "journal": journal_dir},
    )
    return Storage(sessions=sessions, captures=captures, writer=writer)


async def _open_sessions(settings: Settings) -> Any:
    if not settings.redis_url:
        return MemorySessionStore(settings.session_ttl_seconds, settings.context_max_exchanges)
    from server.storage.redis_sessions import RedisSessionStore

    store = RedisSessionStore(
        settings.redis_url,
        ttl_seconds=settings.session_ttl_seconds,
        max_exchanges=settings.context_max_exchanges,
        key_prefix=settings.redis_key_prefix,
    )
    await store.start()
    return store


async def _open_captures(settings: Settings) -> HybridStore:
    backend: Any
    if settings.database_url:
        from server.storage.postgres import PostgresCaptureStore

        backend = PostgresCaptureStore(settings.database_url, pool_max=settings.database_pool_max)
    else:
        backend = SQLiteCaptureStore(settings.database_path)
    embedder: Embedder | None = None
    if settings.embedder == "static":
        embedder = await asyncio.to_thread(default_embedder)
    elif settings.embedder == "openai":
        key = settings.providers["OPENAI_API_KEY"]
        if not key:
            raise ConfigError("EMBEDDER=openai needs OPENAI_API_KEY")
        from server.storage.embedder_openai import OpenAIEmbedder

        embedder = OpenAIEmbedder(key, settings.providers["OPENAI_BASE_URL"])
    captures = HybridStore(backend, embedder, cache_ttl=settings.search_cache_seconds)
    await captures.start()
    return captures


async def close_storage(storage: Storage) -> None:
    """Writer first (its flush needs the stores), then the stores."""
    try:
        await storage.writer.close()
    finally:
        try:
            await storage.captures.close()
        finally:
            await storage.sessions.close()

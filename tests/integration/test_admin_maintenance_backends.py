"""Maintenance state shared through a file (workers of one host) and real Redis (instances)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from admin.maintenance import FileBackend, Maintenance, RedisBackend

REDIS = "redis://127.0.0.1:6379/0"


async def _share(a: Maintenance, b: Maintenance) -> None:
    await a.refresh()
    await b.refresh()
    assert not a.enabled and not b.enabled
    await a.set(True, "db upgrade", 120)
    assert a.enabled
    assert not b.enabled  # until it refreshes
    await b.refresh()
    assert b.enabled and b.message == "db upgrade" and b.state.retry_after == 120
    await b.set(False)
    await a.refresh()
    assert not a.enabled


async def test_file_backend_shares_state(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "maintenance.json"
    await _share(Maintenance(FileBackend(path)), Maintenance(FileBackend(path)))
    assert not list(path.parent.glob(".maintenance-*"))  # temp files renamed, never left


async def test_redis_backend_shares_state() -> None:
    key = f"test:{uuid.uuid4().hex}:maintenance"
    a, b = RedisBackend(REDIS, key=key), RedisBackend(REDIS, key=key)
    try:
        await _share(Maintenance(a), Maintenance(b))
    finally:
        client = aioredis.from_url(REDIS)
        await client.delete(key)
        await client.aclose()
        await a.close()
        await b.close()


async def test_unreachable_redis_keeps_last_state_and_says_so() -> None:
    m = Maintenance(RedisBackend("redis://127.0.0.1:1/0", timeout=0.5))
    await m.refresh()
    assert m.enabled is False
    assert m.last_sync_error and "Error" in m.last_sync_error
    with pytest.raises(Exception):  # noqa: B017 - any connection error: the operator is told
        await m.set(True, "x")
    assert m.enabled is False  # not switched locally when the shared write failed
    await m.backend.close()


async def test_corrupt_file_is_reported_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "maintenance.json"
    path.write_text("{not json")
    m = Maintenance(FileBackend(path))
    await m.refresh()
    assert m.enabled is False
    assert m.to_dict()["sync_error"].startswith("JSONDecodeError")

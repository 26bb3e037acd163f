"""Helpers for the Postgres storage tests (no tests here): a throwaway database per test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg

from tests.pg import ADMIN_DSN, dsn_for, temp_database

__all__ = ["ADMIN_DSN", "dsn_for", "set_database_down", "temp_database", "until"]


async def set_database_down(dsn: str, down: bool, admin_dsn: str = ADMIN_DSN) -> None:
    """Refuse new connections and kill existing ones (down), or accept them again."""
    name = dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await admin.execute(
            f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if down else "true"}'
        )
        if down:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
    finally:
        await admin.close()


async def until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll a condition every 50 ms; whether it became true within the timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True

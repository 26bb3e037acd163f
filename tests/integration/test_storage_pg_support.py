"""Helpers for the Postgres storage tests (no tests here): a throwaway database per test."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def dsn_for(name: str, base: str = ADMIN_DSN) -> str:
    return base.rsplit("/", 1)[0] + "/" + name


@contextlib.asynccontextmanager
async def temp_database(admin_dsn: str = ADMIN_DSN) -> AsyncIterator[str]:
    """Create `lva_test_<random>`, yield its DSN, drop it (forcing out connections)."""
    name = f"lva_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield dsn_for(name, admin_dsn)
    finally:
        admin = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


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

"""A throwaway Postgres database per test, on the local server (trust auth)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

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

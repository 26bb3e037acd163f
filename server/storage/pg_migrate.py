"""Versioned Postgres migrations (server/migrations/postgres/NNN_name.sql).

Applied at start-up inside `pg_advisory_lock`, so ten instances starting at once run
each migration exactly once: the first takes the lock and migrates, the others wait,
then find every version already in `schema_migrations` and go on.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

# Any constant shared by every instance of this application: the key of its migration lock.
MIGRATION_LOCK_KEY = 0x4C56_4121


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) in version order."""
    folder = resources.files("server.migrations").joinpath("postgres")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append((int(number), rest.removesuffix(".sql"), entry.read_text("utf-8")))
    return sorted(found)


async def migrate(conn: asyncpg.Connection, lock_timeout: float = 120.0) -> list[int]:
    """Apply pending migrations; returns the versions this call applied."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY, timeout=lock_timeout)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            log.info("migration applied", extra={"version": version, "migration": name})
            applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)

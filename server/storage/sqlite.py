"""SQLite capture store: the embedded default when `DATABASE_URL` is unset.

A plain SQLite file in WAL mode (operators back it up with `sqlite3 FILE ".backup ..."`),
with an FTS5 external-content index kept in step by triggers. sqlite3 is blocking, so
every call runs on one dedicated thread: the event loop never waits on the disk, and one
connection used from one thread needs no locking of its own.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, TypeVar

import numpy as np

from server.storage.base import (
    Capture,
    CaptureStats,
    SearchHit,
    SearchQuery,
    StoredCapture,
)
from server.storage.text import (
    MARK_END,
    MARK_START,
    clean_text,
    fts5_match,
    highlight,
    search_terms,
)
from server.storage.vectors import VectorIndex

T = TypeVar("T")
SNIPPET_TOKENS = 16


def _migrations() -> list[tuple[int, str]]:
    """(version, sql) of server/migrations/sqlite/NNN_*.sql in order."""
    folder = resources.files("server.migrations").joinpath("sqlite")
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            out.append((int(entry.name.split("_", 1)[0]), entry.read_text("utf-8")))
    return sorted(out)


def capture_row(c: Capture) -> tuple[str, str, float, str, str, str]:
    """A Capture as a row, text cleaned and metadata serialised (never raises on types)."""
    meta = json.dumps(c.metadata, default=str, ensure_ascii=False)
    return (
        c.capture_id,
        c.session_id,
        float(c.timestamp),
        clean_text(c.user_text),
        clean_text(c.agent_text),
        clean_text(meta),
    )


class SQLiteCaptureStore:
    """CaptureStore on one SQLite file; search = FTS5 bm25 (+ vectors when indexed)."""

    name = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._vectors: dict[str, VectorIndex] = {}
        self._embedded_upto = 0  # every capture with id <= this has a vector
        self._vectors_dirty = True

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._open)

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a committed batch survives a process crash; only an OS crash or
        # power loss can roll back the last transactions.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, sql in _migrations():
            if number > version:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _split_sql(sql):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={number}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._close_conn)
        self._pool.shutdown(wait=True)

    def _close_conn(self, db: sqlite3.Connection) -> None:
        db.close()
        self._conn = None

    async def ping(self) -> bool:
        try:
            return await self._run(lambda db: db.execute("SELECT 1").fetchone()[0] == 1)
        except Exception:
            return False

    # --- writes ----------------------------------------------------------------------
    async def write_batch(self, captures: Sequence[Capture]) -> None:
        if captures:
            await self._run(self._insert, list(captures))

    @staticmethod
    def _insert(db: sqlite3.Connection, captures: list[Capture]) -> None:
        rows = [capture_row(c) for c in captures]  # serialising is CPU: not on the loop
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT OR IGNORE INTO captures (capture_id, session_id, timestamp, "
                "user_text, agent_text, metadata) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # --- reads -----------------------------------------------------------------------
    async def history(self, session_id: str, limit: int) -> list[StoredCapture]:
        """The session's most recent `limit` captures, oldest first."""

        def query(db: sqlite3.Connection) -> list[StoredCapture]:
            rows = db.execute(
                "SELECT id, session_id, timestamp, user_text, agent_text, metadata "
                "FROM captures WHERE session_id = ? ORDER BY timestamp DESC, id DESC LIMIT ?",
                (session_id, limit),
            ).fetchall()
            return [_stored(r) for r in reversed(rows)]

        return await self._run(query)

    async def stats(self) -> CaptureStats:
        since = time.time() - 86400

        def query(db: sqlite3.Connection) -> CaptureStats:
            total, last = db.execute("SELECT count(*), max(timestamp) FROM captures").fetchone()
            sessions = db.execute(
                "SELECT count(*) FROM (SELECT DISTINCT session_id FROM captures)"
            ).fetchone()[0]
            recent = db.execute(
                "SELECT count(*) FROM captures WHERE timestamp >= ?", (since,)
            ).fetchone()[0]
            return CaptureStats(total, sessions, recent, last)

        return await self._run(query)

    async def keyword_search(self, query: SearchQuery, k: int) -> list[SearchHit]:
        """Up to k hits by bm25 (best first); score = -bm25 (higher is better)."""
        terms = search_terms(query.query)
        if not terms:
            return []
        where, params = _filters(query)
        sql = (
            "SELECT c.id, c.session_id, c.timestamp, c.user_text, c.agent_text, "
            f"snippet(captures_fts, -1, '{MARK_START}', '{MARK_END}', '…', {SNIPPET_TOKENS}),"
            " bm25(captures_fts) AS rank "
            "FROM captures_fts JOIN captures c ON c.id = captures_fts.rowid "
            f"WHERE captures_fts MATCH ?{where} ORDER BY rank LIMIT ?"
        )
        args = (fts5_match(terms), *params, k)

        def run(db: sqlite3.Connection) -> list[SearchHit]:
            return [
                SearchHit(r[0], r[1], r[2], r[3], r[4], highlight(r[5]), -float(r[6]))
                for r in db.execute(sql, args).fetchall()
            ]

        return await self._run(run)

    async def search(self, query: SearchQuery) -> list[SearchHit]:
        """Keyword only; HybridSearch (hybrid.py) adds meaning on top."""
        return await self.keyword_search(query, query.limit)

    async def get_many(self, ids: Sequence[int]) -> dict[int, StoredCapture]:
        """Captures by id (for hits found by meaning only)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        sql = (
            "SELECT id, session_id, timestamp, user_text, agent_text, metadata "
            f"FROM captures WHERE id IN ({marks})"
        )
        rows = await self._run(lambda db: db.execute(sql, list(ids)).fetchall())
        return {r[0]: _stored(r) for r in rows}

    # --- embeddings (filled by the indexer, read by the vector index) -------------------
    async def pending_embeddings(self, limit: int, model: str) -> list[tuple[int, str]]:
        """Captures with no vector yet, oldest first: (id, text to embed).

        One indexer embeds in id order, so everything below the highest id saved is done:
        starting there keeps this query cheap however many captures are embedded."""
        sql = (
            "SELECT c.id, c.user_text, c.agent_text FROM captures c "
            "LEFT JOIN capture_vectors v ON v.id = c.id AND v.model = ? "
            "WHERE v.id IS NULL AND c.id > ? ORDER BY c.id LIMIT ?"
        )
        after = self._embedded_upto
        rows = await self._run(lambda db: db.execute(sql, (model, after, limit)).fetchall())
        return [(r[0], f"{r[1]}\n{r[2]}") for r in rows]

    async def save_embeddings(self, model: str, items: Sequence[tuple[int, np.ndarray]]) -> None:
        rows = [(i, model, np.asarray(v, dtype=np.float32).tobytes()) for i, v in items]

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT OR REPLACE INTO capture_vectors (id, model, vector) VALUES (?, ?, ?)",
                    rows,
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        if rows:
            await self._run(write)
            self._vectors_dirty = True
            self._embedded_upto = max(self._embedded_upto, max(i for i, _, _ in rows))

    async def vector_search(
        self, vector: np.ndarray, query: SearchQuery, k: int, model: str
    ) -> list[tuple[int, float]]:
        """Exact cosine over the in-memory index, first loading vectors saved since."""
        index = self._vectors.get(model)
        if index is None:
            index = self._vectors[model] = VectorIndex(int(vector.shape[0]))
            self._vectors_dirty = True
        # Only this process writes the file, so only a save here can add vectors: skip the
        # round trip through the (single, possibly busy) SQLite thread otherwise.
        while self._vectors_dirty:
            self._vectors_dirty = False
            rows = await self._run(_load_vectors, model, index.cursor, 5000)
            if not rows:
                break
            index.upsert([(r[0], r[1], r[2], np.frombuffer(r[3], dtype=np.float32)) for r in rows])
            index.cursor = rows[-1][0]
            if len(rows) == 5000:
                self._vectors_dirty = True  # more pages to load
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, index.search, vector, k, query.session_id, query.since, query.until
        )

    # --- plumbing --------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, fn, args)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._conn is None:
            raise RuntimeError("SQLite store is not started")
        return fn(self._conn, *args)


def _load_vectors(
    db: sqlite3.Connection, model: str, after_id: int, limit: int
) -> list[tuple[int, str, float, bytes]]:
    """(id, session_id, timestamp, vector bytes) with id > after_id, in id order.

    One indexer writes vectors in id order, so a cursor on the id never skips a row."""
    return db.execute(
        "SELECT v.id, c.session_id, c.timestamp, v.vector FROM capture_vectors v "
        "JOIN captures c ON c.id = v.id WHERE v.model = ? AND v.id > ? "
        "ORDER BY v.id LIMIT ?",
        (model, after_id, limit),
    ).fetchall()


def _filters(query: SearchQuery) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if query.session_id is not None:
        clauses.append("c.session_id = ?")
        params.append(query.session_id)
    if query.since is not None:
        clauses.append("c.timestamp >= ?")
        params.append(query.since)
    if query.until is not None:
        clauses.append("c.timestamp <= ?")
        params.append(query.until)
    return "".join(" AND " + c for c in clauses), params


def _stored(r: Sequence[Any]) -> StoredCapture:
    try:
        meta = json.loads(r[5])
    except ValueError:
        meta = {}
    return StoredCapture(r[0], r[1], r[2], r[3], r[4], meta if isinstance(meta, dict) else {})


def _split_sql(sql: str) -> list[str]:
    """Statements of a migration; trigger bodies (BEGIN ... END;) stay whole."""
    out, buf = [], []
    for line in sql.splitlines():
        if line.strip().startswith("--") and not buf:
            continue
        buf.append(line)
        if sqlite3.complete_statement("\n".join(buf)):
            out.append("\n".join(buf).strip())
            buf = []
    return [s for s in out if s]

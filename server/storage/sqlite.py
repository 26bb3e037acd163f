"""SQLite capture store: the embedded default when `DATABASE_URL` is unset.

A plain SQLite file in WAL mode (operators back it up with `sqlite3 FILE ".backup ..."`),
with an FTS5 external-content index kept in step by triggers. Ownership, erasure and the
rules a batch is checked against are shared with Postgres (learners.py). sqlite3 is blocking, so
every call runs on one dedicated thread: the event loop never waits on the disk, and one
connection used from one thread needs no locking of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, TypeVar

import numpy as np

from server.storage import learners
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
from server.storage.vectors import VectorIndex, search_index

T = TypeVar("T")
SNIPPET_TOKENS = 16
RETENTION_CHUNK = 5000  # captures deleted per transaction, so writes interleave
_COLUMNS = "id, session_id, timestamp, user_text, agent_text, metadata, learner_id"

# A session gets an owner unless it was deleted or the learner was forgotten.
_CLAIM = (
    "INSERT OR IGNORE INTO sessions (session_id, learner_id, created_at) "
    "SELECT ?1, ?2, ?3 WHERE NOT EXISTS "
    "(SELECT 1 FROM deleted_sessions WHERE session_id = ?1) AND NOT EXISTS "
    "(SELECT 1 FROM forgotten_learners WHERE learner_id = ?2)"
)
# A capture is stored under its session's owner, and only if it claims no other learner,
# the session was not deleted and the owner not forgotten.
_INSERT = (
    "INSERT OR IGNORE INTO captures (capture_id, session_id, timestamp, user_text, "
    "agent_text, metadata, learner_id) SELECT ?1, ?2, ?3, ?4, ?5, ?6, s.learner_id "
    "FROM sessions s WHERE s.session_id = ?2 AND ?7 IN ('', s.learner_id) "
    "AND NOT EXISTS (SELECT 1 FROM deleted_sessions d WHERE d.session_id = ?2) "
    "AND NOT EXISTS (SELECT 1 FROM forgotten_learners f WHERE f.learner_id = s.learner_id)"
)
# Postgres placeholders, like the shared SQL it runs beside (LearnerQueries.list_sessions).
_LIST_SESSIONS = (
    "WITH recent AS (SELECT s.session_id, s.learner_id, s.title, s.created_at, "
    "max(c.timestamp) AS last_at, count(c.id) AS n FROM sessions s "
    "LEFT JOIN captures c ON c.session_id = s.session_id WHERE s.learner_id = $1 "
    "GROUP BY s.session_id ORDER BY coalesce(max(c.timestamp), s.created_at) DESC, "
    "s.session_id DESC LIMIT $2) "
    "SELECT r.session_id, r.learner_id, r.title, r.created_at, r.last_at, r.n, "
    "(SELECT f.user_text FROM captures f WHERE f.session_id = r.session_id "
    "AND f.user_text <> '' ORDER BY f.timestamp, f.id LIMIT 1) FROM recent r "
    "ORDER BY coalesce(r.last_at, r.created_at) DESC, r.session_id DESC"
)


def _migrations() -> list[tuple[int, str]]:
    """(version, sql) of server/migrations/sqlite/NNN_*.sql in order."""
    folder = resources.files("server.migrations").joinpath("sqlite")
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            out.append((int(entry.name.split("_", 1)[0]), entry.read_text("utf-8")))
    return sorted(out)


def capture_row(c: Capture) -> tuple[str, str, float, str, str, str, str]:
    """A Capture as a row, text cleaned and metadata serialised (never raises on types)."""
    meta = json.dumps(c.metadata, default=str, ensure_ascii=False)
    return (
        c.capture_id,
        c.session_id,
        float(c.timestamp),
        clean_text(c.user_text),
        clean_text(c.agent_text),
        clean_text(meta),
        str(c.learner_id),
    )


def _enable_wal(conn: sqlite3.Connection, attempts: int = 50) -> None:
    """Switch the file to WAL. Workers that open a new file at the same moment race for
    it, and SQLite answers "database is locked" at once (no busy wait for a journal mode
    change): try again a moment later, for about 2.5 s in all."""
    for attempt in range(attempts):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


class SQLiteCaptureStore(learners.LearnerQueries):
    """CaptureStore on one SQLite file; search = FTS5 bm25 (+ vectors when indexed)."""

    name = "sqlite"
    list_sessions_sql = _LIST_SESSIONS

    def __init__(self, path: str) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._vectors: dict[str, VectorIndex] = {}
        self._embedded_upto = 0  # every capture with id <= this has a vector
        self._vectors_dirty = True
        # A second connection that only asks whether the file changed since it last
        # looked (`PRAGMA data_version`): other workers and instances write the same file.
        self._probe: sqlite3.Connection | None = None
        self._probe_lock = threading.Lock()
        self._data_version: int | None = None

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._open)

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
        _enable_wal(conn)
        # WAL + NORMAL: a committed batch survives a process crash; only an OS crash or
        # power loss can roll back the last transactions.
        conn.execute("PRAGMA synchronous=NORMAL")
        _migrate(conn)
        conn.execute("PRAGMA foreign_keys=ON")
        self._conn = conn
        self._probe = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._probe.execute("PRAGMA busy_timeout=1000")

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._close_conn)
        self._pool.shutdown(wait=True)

    def _close_conn(self, db: sqlite3.Connection) -> None:
        db.close()
        self._conn = None
        with self._probe_lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None

    async def changed(self) -> bool:
        """Whether the file changed since the last call (a commit by this process or any
        other): the in-memory vector index then loads what was saved since, and the
        caller drops cached results. A few microseconds, off the event loop."""
        changed = await asyncio.get_running_loop().run_in_executor(None, self._read_version)
        if changed:
            self._vectors_dirty = True
        return changed

    def _read_version(self) -> bool:
        with self._probe_lock:
            if self._probe is None:
                return False
            try:
                version = self._probe.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error:
                return True  # cannot tell: look again
            changed = version != self._data_version
            self._data_version = version
            return changed

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
        """Claim unowned sessions, then store the captures the rules let in (_INSERT)."""
        rows = [capture_row(c) for c in captures]  # serialising is CPU: not on the loop
        claims = [(c.session_id, learners.claimant(c), float(c.timestamp)) for c in captures]
        with _transaction(db):
            db.executemany(_CLAIM, claims)
            db.executemany(_INSERT, rows)

    # --- ownership ---------------------------------------------------------------------
    async def claim_session(self, session_id: str, learner_id: str) -> str:
        learners.check_learner_id(learner_id)

        def claim(db: sqlite3.Connection) -> str:
            with _transaction(db):
                db.execute(_CLAIM, (session_id, learner_id, time.time()))
                row = db.execute(learners.for_sqlite(learners.OWNER), (session_id,)).fetchone()
            return learner_id if row is None else row[0]  # a forgotten claimant owns nothing

        return await self._run(claim)

    # --- erasure -----------------------------------------------------------------------
    async def _erase_sessions(self, first: list[str], column: str, value: str) -> int:
        """(See LearnerQueries.) One transaction on the only connection: nothing overlaps."""

        def erase(db: sqlite3.Connection) -> list[int]:
            with _transaction(db):
                for sql in first:
                    db.execute(learners.for_sqlite(sql), (value,))
                db.execute(f"DELETE FROM sessions WHERE {column} = ?", (value,))
                return _delete_captures(db, f"{column} = ?", (value,))

        return await self._erase(erase)

    async def delete_older_than(self, timestamp: float) -> int:
        """Retention, RETENTION_CHUNK captures per transaction (the thread is shared).
        Session rows stay: they say whose an id is, so nobody else can claim it later."""
        deleted = 0
        while True:
            n = await self._erase(_delete_chunk_older_than, float(timestamp))
            deleted += n
            if n < RETENTION_CHUNK:
                break
        return deleted

    # --- reads -----------------------------------------------------------------------
    async def _scalar(self, sql: str, *args: Any) -> Any:
        row = await self._run(lambda db: db.execute(learners.for_sqlite(sql), args).fetchone())
        return None if row is None else row[0]

    async def _rows(self, sql: str, *args: Any) -> list[Any]:
        return await self._run(lambda db: db.execute(learners.for_sqlite(sql), args).fetchall())

    async def _newest_first(self, column: str, value: str, limit: int) -> list[StoredCapture]:
        sql = (
            f"SELECT {_COLUMNS} FROM captures WHERE {column} = ? "
            "ORDER BY timestamp DESC, id DESC LIMIT ?"
        )
        rows = await self._run(lambda db: db.execute(sql, (value, limit)).fetchall())
        return [_stored(r) for r in reversed(rows)]

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

    async def get_many(
        self, ids: Sequence[int], learner_id: str | None = None
    ) -> dict[int, StoredCapture]:
        """Captures by id (for hits found by meaning only), only the learner's if given."""
        if not ids:
            return {}
        sql = f"SELECT {_COLUMNS} FROM captures WHERE id IN ({','.join('?' * len(ids))})"
        args: list[Any] = list(ids)
        if learner_id is not None:
            sql += " AND learner_id = ?"
            args.append(learner_id)
        rows = await self._run(lambda db: db.execute(sql, args).fetchall())
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
        """Store vectors, skipping captures deleted while they were being embedded."""
        rows = [(i, model, np.asarray(v, dtype=np.float32).tobytes()) for i, v in items]

        def write(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.executemany(
                    "INSERT OR REPLACE INTO capture_vectors (id, model, vector) "
                    "SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM captures WHERE id = ?1)",
                    rows,
                )

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
        # Another worker (or instance) on this file may have saved vectors: a cheap check
        # of the file's data version, not a round trip through the (single, possibly
        # busy) SQLite thread, tells whether there is anything to load.
        await self.changed()
        while self._vectors_dirty:
            self._vectors_dirty = False  # a save while this loads sets it again
            if not await self._run(_load_vectors, index, model, 5000):
                self._vectors_dirty = True  # more pages to load
        return await search_index(index, vector, query, k)

    async def _erase(self, fn: Callable[..., list[int]], *args: Any) -> int:
        """Run a deletion and drop its captures from the in-memory vector indexes.

        Both happen on the SQLite thread, where the indexes are also loaded, so a load
        cannot put back a vector deleted between its read and its upsert."""

        def erase(db: sqlite3.Connection) -> int:
            ids = fn(db, *args)
            for index in list(self._vectors.values()):
                index.remove(ids)
            return len(ids)

        return await self._run(erase)

    # --- plumbing --------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, fn, args)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._conn is None:
            raise RuntimeError("SQLite store is not started")
        return fn(self._conn, *args)


def _load_vectors(db: sqlite3.Connection, index: VectorIndex, model: str, page: int) -> bool:
    """Load one page of vectors saved after `index.cursor`; whether it was the last page.

    One indexer writes vectors in id order, so a cursor on the id never skips a row."""
    rows = db.execute(
        "SELECT v.id, c.session_id, c.learner_id, c.timestamp, v.vector FROM capture_vectors v "
        "JOIN captures c ON c.id = v.id WHERE v.model = ? AND v.id > ? "
        "ORDER BY v.id LIMIT ?",
        (model, index.cursor, page),
    ).fetchall()
    if rows:
        index.upsert([(*r[:4], np.frombuffer(r[4], dtype=np.float32)) for r in rows])
        index.cursor = rows[-1][0]
    return len(rows) < page


def _filters(query: SearchQuery) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if query.learner_id is not None:
        clauses.append("c.learner_id = ?")
        params.append(query.learner_id)
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
    meta = meta if isinstance(meta, dict) else {}
    return StoredCapture(r[0], r[1], r[2], r[3], r[4], meta, r[6])


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _delete_captures(db: sqlite3.Connection, where: str, params: Sequence[Any]) -> list[int]:
    """Delete captures (their FTS rows go by trigger, their vectors by cascade); the ids."""
    return [r[0] for r in db.execute(f"DELETE FROM captures WHERE {where} RETURNING id", params)]


def _delete_chunk_older_than(db: sqlite3.Connection, timestamp: float) -> list[int]:
    with _transaction(db):
        return _delete_captures(
            db,
            "id IN (SELECT id FROM captures WHERE timestamp < ? LIMIT ?)",
            (timestamp, RETENTION_CHUNK),
        )


def _migrate(conn: sqlite3.Connection) -> None:
    """Apply the migrations newer than `PRAGMA user_version`, each in one transaction.

    Foreign keys are off meanwhile (the pragma cannot change inside a transaction), so a
    migration can rebuild a table the usual SQLite way (copy, drop, rename) without the
    drop cascading into the tables that reference it; the keys are checked afterwards."""
    conn.execute("PRAGMA foreign_keys=OFF")
    for number, sql in _migrations():
        # The version is read inside the write transaction: workers starting together
        # on one file take turns, and each migration runs once.
        with _transaction(conn):
            if conn.execute("PRAGMA user_version").fetchone()[0] >= number:
                continue
            for statement in _split_sql(sql):
                conn.execute(statement)
            if conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
                raise RuntimeError(f"migration {number} broke a foreign key")
            conn.execute(f"PRAGMA user_version={number}")


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

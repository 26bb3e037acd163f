"""Exact cosine search over embeddings held in process memory (numpy).

Used by SQLite and by Postgres when the pgvector extension is missing. Rows are unit
vectors, so cosine similarity is a matrix-vector product: 100 000 x 128 float32 (51 MB)
takes a few milliseconds. Callers run `search` in an executor; a lock makes `upsert`
and `search` safe from different threads.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Iterable, Sequence

import numpy as np

from server.storage.base import SearchQuery


class _Labels:
    """Strings (session or learner ids) as small integer codes, so a filter on them is
    one vectorised comparison instead of a Python loop over every row."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}

    def code(self, label: str) -> int:
        return self._codes.setdefault(label, len(self._codes))

    def find(self, label: str) -> int | None:
        return self._codes.get(label)


class VectorIndex:
    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self._mat = np.zeros((capacity, dim), dtype=np.float32)
        self._ids = np.zeros(capacity, dtype=np.int64)
        self._ts = np.zeros(capacity, dtype=np.float64)
        self._session = np.zeros(capacity, dtype=np.int32)
        self._learner = np.zeros(capacity, dtype=np.int32)
        self._labels = _Labels()
        self._row: dict[int, int] = {}
        self._n = 0
        self._lock = threading.Lock()
        self.cursor: int = 0  # the store's sync position (last id or sequence loaded)

    def __len__(self) -> int:
        return self._n

    def upsert(self, rows: Sequence[tuple[int, str, str, float, np.ndarray]]) -> None:
        """Add or replace (id, session_id, learner_id, timestamp, unit vector) rows."""
        with self._lock:
            for cid, session_id, learner_id, ts, vec in rows:
                row = self._row.get(cid)
                if row is None:
                    if self._n == len(self._ids):
                        self._grow()
                    row = self._n
                    self._n += 1
                    self._row[cid] = row
                self._mat[row] = vec
                self._ids[row] = cid
                self._ts[row] = ts
                self._session[row] = self._labels.code(session_id)
                self._learner[row] = self._labels.code(learner_id)

    def remove(self, ids: Iterable[int]) -> int:
        """Drop deleted captures (the last row moves into each gap); returns how many."""
        removed = 0
        with self._lock:
            for cid in ids:
                row = self._row.pop(int(cid), None)
                if row is None:
                    continue
                last = self._n - 1
                if row != last:
                    moved = int(self._ids[last])
                    for column in (self._mat, self._ids, self._ts, self._session, self._learner):
                        column[row] = column[last]
                    self._row[moved] = row
                self._n = last
                removed += 1
        return removed

    def search(
        self,
        query: np.ndarray,
        k: int,
        session_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        learner_id: str | None = None,
    ) -> list[tuple[int, float]]:
        """The k most similar (id, cosine) among rows passing the filters, best first.

        Rows are filtered before ranking, so a learner gets their own k best however many
        closer rows other learners have."""
        with self._lock:
            candidates = self._candidates(session_id, since, until, learner_id)
            if candidates is None:  # no filter: every row, without copying the matrix
                sims = self._mat[: self._n] @ np.asarray(query, dtype=np.float32)
                ids = self._ids[: self._n].copy()
            else:
                sims = self._mat[candidates] @ np.asarray(query, dtype=np.float32)
                ids = self._ids[candidates]
        top = min(k, sims.size)
        if top <= 0:
            return []
        best = np.argpartition(-sims, top - 1)[:top]
        best = best[np.argsort(-sims[best])]
        return [(int(ids[i]), float(sims[i])) for i in best]

    def _candidates(
        self,
        session_id: str | None,
        since: float | None,
        until: float | None,
        learner_id: str | None,
    ) -> np.ndarray | None:
        """Rows passing the filters (None when nothing is filtered). Caller holds the lock."""
        n = self._n
        if session_id is None and since is None and until is None and learner_id is None:
            return None
        mask = np.ones(n, dtype=bool)
        if since is not None:
            mask &= self._ts[:n] >= since
        if until is not None:
            mask &= self._ts[:n] <= until
        for column, label in ((self._session, session_id), (self._learner, learner_id)):
            if label is not None:
                code = self._labels.find(label)
                mask &= False if code is None else column[:n] == code
        return np.flatnonzero(mask)

    def _grow(self) -> None:
        cap = len(self._ids) * 2
        self._mat = np.resize(self._mat, (cap, self.dim))
        self._ids = np.resize(self._ids, cap)
        self._ts = np.resize(self._ts, cap)
        self._session = np.resize(self._session, cap)
        self._learner = np.resize(self._learner, cap)


async def search_index(
    index: VectorIndex, vector: np.ndarray, query: SearchQuery, k: int
) -> list[tuple[int, float]]:
    """`index.search` with the query's filters, in a worker thread (a big matrix product
    must not stall the event loop)."""
    search = functools.partial(
        index.search,
        vector,
        k,
        session_id=query.session_id,
        since=query.since,
        until=query.until,
        learner_id=query.learner_id,
    )
    return await asyncio.get_running_loop().run_in_executor(None, search)

"""Exact cosine search over embeddings held in process memory (numpy).

Used by SQLite and by Postgres when the pgvector extension is missing. Rows are unit
vectors, so cosine similarity is a matrix-vector product: 100 000 x 128 float32 (51 MB)
takes a few milliseconds. Callers run `search` in an executor; a lock makes `upsert`
and `search` safe from different threads.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np


class VectorIndex:
    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self._mat = np.zeros((capacity, dim), dtype=np.float32)
        self._ids = np.zeros(capacity, dtype=np.int64)
        self._ts = np.zeros(capacity, dtype=np.float64)
        self._sessions: list[str] = []
        self._row: dict[int, int] = {}
        self._n = 0
        self._lock = threading.Lock()
        self.cursor: int = 0  # the store's sync position (last id or sequence loaded)

    def __len__(self) -> int:
        return self._n

    def upsert(self, rows: Sequence[tuple[int, str, float, np.ndarray]]) -> None:
        """Add or replace (id, session_id, timestamp, unit vector) rows."""
        with self._lock:
            for cid, session_id, ts, vec in rows:
                row = self._row.get(cid)
                if row is None:
                    if self._n == len(self._ids):
                        self._grow()
                    row = self._n
                    self._n += 1
                    self._row[cid] = row
                    self._sessions.append(session_id)
                self._mat[row] = vec
                self._ids[row] = cid
                self._ts[row] = ts
                self._sessions[row] = session_id

    def search(
        self,
        query: np.ndarray,
        k: int,
        session_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[tuple[int, float]]:
        """The k most similar (id, cosine) among rows passing the filters, best first."""
        with self._lock:
            n = self._n
            if n == 0 or k <= 0:
                return []
            sims = self._mat[:n] @ np.asarray(query, dtype=np.float32)
            mask = np.ones(n, dtype=bool)
            if since is not None:
                mask &= self._ts[:n] >= since
            if until is not None:
                mask &= self._ts[:n] <= until
            if session_id is not None:
                mask &= np.fromiter((s == session_id for s in self._sessions), bool, n)
            ids = self._ids[:n]
        candidates = np.flatnonzero(mask)
        if candidates.size == 0:
            return []
        sub = sims[candidates]
        top = min(k, sub.size)
        best = np.argpartition(-sub, top - 1)[:top]
        best = best[np.argsort(-sub[best])]
        return [(int(ids[candidates[i]]), float(sub[i])) for i in best]

    def _grow(self) -> None:
        cap = len(self._ids) * 2
        self._mat = np.resize(self._mat, (cap, self.dim))
        self._ids = np.resize(self._ids, cap)
        self._ts = np.resize(self._ts, cap)

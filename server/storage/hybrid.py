"""Hybrid search and background embedding in front of a capture store.

`HybridStore` is the CaptureStore the app uses: writes and reads pass through to the
backend (SQLite or Postgres); `search` fuses the backend's keyword ranking with vector
similarity by reciprocal rank fusion (RRF: score = sum of 1 / (60 + rank) over the two
lists), so a capture that matches by meaning but shares no word still ranks.

Embeddings are computed by an indexer task after captures are written (never on the
voice loop's path), in one worker thread. Results are cached per query and learner; the cache is
invalidated whenever this process writes or deletes captures or writes vectors, and
when the backend reports a change made elsewhere (SQLite: another worker on the same file,
seen through the file's data version before each search); otherwise (Postgres) entries
expire after `cache_ttl` seconds so that other instances' changes show up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from server.storage.base import (
    Capture,
    CaptureStats,
    SearchHit,
    SearchQuery,
    SessionSummary,
    StoredCapture,
)
from server.storage.embedder import Embedder
from server.storage.text import plain_snippet

log = logging.getLogger(__name__)

RRF_K = 60
CANDIDATES = 50
INDEX_BATCH = 256
INDEX_POLL_SECONDS = 5.0


def rrf(*rankings: Sequence[int], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of id rankings (best first) -> (id, score), best first."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, cid in enumerate(ranking):
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores.items(), key=lambda kv: (-kv[1], -kv[0]))


class HybridStore:
    """CaptureStore = backend + embeddings + RRF + query cache (see module docstring)."""

    def __init__(
        self,
        backend: Any,
        embedder: Embedder | None,
        cache_size: int = 512,
        cache_ttl: float = 5.0,
        auto_index: bool = True,
    ) -> None:
        self.backend = backend
        self.embedder = embedder
        self.auto_index = auto_index
        self.name = backend.name
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._cache: OrderedDict[tuple[Any, ...], tuple[int, float, list[SearchHit]]] = (
            OrderedDict()
        )
        self._cache_size = cache_size
        self._cache_ttl = cache_ttl
        self.generation = 0  # bumped on every local write: invalidates the cache
        self._wake = asyncio.Event()
        self._indexer: asyncio.Task[None] | None = None
        self.cache_hits = 0
        self.embedded = 0

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        await self.backend.start()
        if self.embedder is not None:
            prepare = getattr(self.backend, "prepare_vectors", None)
            if prepare is not None:
                await prepare(self.embedder.name, self.embedder.dim)
            if self.auto_index:
                self._indexer = asyncio.create_task(self._index_loop(), name="capture-indexer")

    async def close(self) -> None:
        if self._indexer is not None:
            self._indexer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._indexer
            self._indexer = None
        # An embedding may still be running in the thread (cancelling the indexer does
        # not stop it; a remote embedder can take seconds): wait for it off the loop.
        await asyncio.to_thread(self._pool.shutdown, True)
        await self.backend.close()

    # --- pass-through ------------------------------------------------------------------
    async def write_batch(self, captures: Sequence[Capture]) -> None:
        await self.backend.write_batch(captures)
        self.generation += 1
        self._wake.set()

    async def history(self, session_id: str, limit: int) -> list[StoredCapture]:
        return await self.backend.history(session_id, limit)

    async def claim_session(self, session_id: str, learner_id: str) -> str:
        return await self.backend.claim_session(session_id, learner_id)

    async def session_owner(self, session_id: str) -> str | None:
        return await self.backend.session_owner(session_id)

    async def list_sessions(self, learner_id: str, limit: int) -> list[SessionSummary]:
        return await self.backend.list_sessions(learner_id, limit)

    async def learner_history(self, learner_id: str, limit: int) -> list[StoredCapture]:
        return await self.backend.learner_history(learner_id, limit)

    async def is_forgotten(self, learner_id: str) -> bool:
        return await self.backend.is_forgotten(learner_id)

    # --- erasure: a cached result must never show what was just deleted -------------------
    async def delete_session(self, session_id: str) -> int:
        return self._deleted(await self.backend.delete_session(session_id))

    async def forget_learner(self, learner_id: str) -> int:
        return self._deleted(await self.backend.forget_learner(learner_id))

    async def delete_older_than(self, timestamp: float) -> int:
        return self._deleted(await self.backend.delete_older_than(timestamp))

    def _deleted(self, count: int) -> int:
        self.generation += 1
        self._cache.clear()  # let go of deleted text now, not when entries age out
        return count

    async def stats(self) -> CaptureStats:
        return await self.backend.stats()

    async def ping(self) -> bool:
        return await self.backend.ping()

    # --- search ----------------------------------------------------------------------
    async def search(self, query: SearchQuery) -> list[SearchHit]:
        key = (
            " ".join(query.query.lower().split()),
            query.limit,
            query.learner_id,
            query.session_id,
            query.since,
            query.until,
        )
        changed = getattr(self.backend, "changed", None)
        if changed is not None and await changed():
            self.generation += 1  # another process wrote: cached results may be stale
        cached = self._cache.get(key)
        if (
            cached
            and cached[0] == self.generation
            and time.monotonic() - cached[1] < self._cache_ttl
        ):
            self._cache.move_to_end(key)
            self.cache_hits += 1
            return cached[2]
        # The generation the search started under: a write landing while it runs must
        # invalidate this result too, not have it cached as if it were current.
        generation = self.generation
        hits = await self._search(query)
        self._cache[key] = (generation, time.monotonic(), hits)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return hits

    async def keyword_only(self, query: SearchQuery) -> list[SearchHit]:
        return await self.backend.keyword_search(query, query.limit)

    async def _search(self, query: SearchQuery) -> list[SearchHit]:
        k = max(CANDIDATES, query.limit)
        if self.embedder is None:
            return await self.backend.keyword_search(query, query.limit)
        keyword_task = asyncio.create_task(self.backend.keyword_search(query, k))
        try:
            vector = await self._embed_one(query.query)
            semantic = await self.backend.vector_search(vector, query, k, self.embedder.name)
        finally:
            keyword = await keyword_task
        fused = rrf([h.id for h in keyword], [cid for cid, _ in semantic])
        by_id = {h.id: h for h in keyword}
        out: list[SearchHit] = []
        start = 0
        while len(out) < query.limit and start < len(fused):
            # Normally one round. A vector can outlive its capture in an index another
            # instance has not refreshed since a deletion: such ids resolve to nothing and
            # the next candidates fill their places.
            window = fused[start : start + query.limit - len(out)]
            start += len(window)
            missing = [cid for cid, _ in window if cid not in by_id]
            extra = await self.backend.get_many(missing, query.learner_id) if missing else {}
            for cid, score in window:
                if cid in by_id:
                    out.append(_rescored(by_id[cid], score))
                elif cid in extra:
                    out.append(_meaning_hit(extra[cid], score))
        return out

    async def _embed_one(self, text: str) -> np.ndarray:
        assert self.embedder is not None
        loop = asyncio.get_running_loop()
        vectors = await loop.run_in_executor(self._pool, self.embedder.embed, [text])
        return vectors[0]

    # --- the indexer -------------------------------------------------------------------
    async def index_pending(self) -> int:
        """Embed every capture that has no vector yet; returns how many were embedded."""
        assert self.embedder is not None
        total = 0
        loop = asyncio.get_running_loop()
        while True:
            pending = await self.backend.pending_embeddings(INDEX_BATCH, self.embedder.name)
            if not pending:
                return total
            vectors = await loop.run_in_executor(
                self._pool, self.embedder.embed, [text for _, text in pending]
            )
            items = [(cid, vectors[i]) for i, (cid, _) in enumerate(pending)]
            await self.backend.save_embeddings(self.embedder.name, items)
            total += len(items)
            self.embedded += len(items)
            self.generation += 1

    async def _index_loop(self) -> None:
        backoff = 1.0
        while True:
            self._wake.clear()
            try:
                await self.index_pending()
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is down: the writer journals, we wait
                log.warning("indexer: cannot embed now", extra={"error": repr(exc)[:200]})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that lands as the wait ends, and close() then waited forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(INDEX_POLL_SECONDS):
                    await self._wake.wait()


def _meaning_hit(c: StoredCapture, score: float) -> SearchHit:
    """A hit found by meaning only: the start of the user text stands in for a snippet."""
    snippet = plain_snippet(c.user_text)
    return SearchHit(c.id, c.session_id, c.timestamp, c.user_text, c.agent_text, snippet, score)


def _rescored(hit: SearchHit, score: float) -> SearchHit:
    return SearchHit(
        hit.id, hit.session_id, hit.timestamp, hit.user_text, hit.agent_text, hit.snippet, score
    )

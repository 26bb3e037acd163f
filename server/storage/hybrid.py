"""Hybrid search and background embedding in front of a capture store.

`HybridStore` is the CaptureStore the app uses: writes and reads pass through to the
backend (SQLite or Postgres); `search` fuses the backend's keyword ranking with vector
similarity by reciprocal rank fusion (RRF: score = sum of 1 / (60 + rank) over the two
lists), so a capture that matches by meaning but shares no word still ranks.

Embeddings are computed by an indexer task after captures are written (never on the
voice loop's path), in one worker thread. Results are cached per query; the cache is
invalidated whenever this process writes captures or vectors, and entries also expire
after `cache_ttl` seconds so that other instances' writes show up.
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

from server.storage.base import Capture, CaptureStats, SearchHit, SearchQuery, StoredCapture
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

    async def stats(self) -> CaptureStats:
        return await self.backend.stats()

    async def ping(self) -> bool:
        return await self.backend.ping()

    # --- search ----------------------------------------------------------------------
    async def search(self, query: SearchQuery) -> list[SearchHit]:
        key = (
            " ".join(query.query.lower().split()),
            query.limit,
            query.session_id,
            query.since,
            query.until,
        )
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
        fused = rrf([h.id for h in keyword], [cid for cid, _ in semantic])[: query.limit]
        by_id = {h.id: h for h in keyword}
        missing = [cid for cid, _ in fused if cid not in by_id]
        extra = await self.backend.get_many(missing) if missing else {}
        out = []
        for cid, score in fused:
            hit = by_id.get(cid)
            if hit is not None:
                out.append(_rescored(hit, score))
            elif cid in extra:
                c = extra[cid]
                snippet = plain_snippet(c.user_text)
                out.append(
                    SearchHit(
                        c.id, c.session_id, c.timestamp, c.user_text, c.agent_text, snippet, score
                    )
                )
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), INDEX_POLL_SECONDS)


def _rescored(hit: SearchHit, score: float) -> SearchHit:
    return SearchHit(
        hit.id, hit.session_id, hit.timestamp, hit.user_text, hit.agent_text, hit.snippet, score
    )

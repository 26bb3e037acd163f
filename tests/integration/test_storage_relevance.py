"""Search by meaning: paraphrased queries find the right capture (SQLite backend).

The Postgres variant of this test lives in test_storage_postgres.py and reuses `score`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from test_storage_relevance_data import CAPTURES, QUERIES

from pipelines.ports import Capture
from server.storage.base import SearchQuery
from server.storage.embedder import default_embedder
from server.storage.hybrid import HybridStore, rrf
from server.storage.sqlite import SQLiteCaptureStore


def relevance_captures() -> list[Capture]:
    now = time.time()
    return [
        Capture(f"learner{i % 4}", user, agent, now - 1000 + i, {}, capture_id=f"rel-{i}")
        for i, (user, agent) in enumerate(CAPTURES)
    ]


async def score(store: HybridStore, label: str) -> tuple[float, float]:
    """Top-3 hit rate of hybrid and of keyword-only search over the query set."""
    by_text = {}
    hybrid_ok = keyword_ok = 0
    for query, target in QUERIES:
        want = CAPTURES[target][0]
        hybrid = await store.search(SearchQuery(query, limit=3))
        keyword = await store.keyword_only(SearchQuery(query, limit=3))
        hybrid_ok += want in [h.user_text for h in hybrid]
        keyword_ok += want in [h.user_text for h in keyword]
        by_text[query] = [h.user_text[:30] for h in hybrid]
    n = len(QUERIES)
    print(
        f"\n[{label}] top-3 on {n} paraphrased queries over {len(CAPTURES)} captures: "
        f"hybrid {hybrid_ok}/{n} = {hybrid_ok / n:.0%}, keyword-only {keyword_ok}/{n} = "
        f"{keyword_ok / n:.0%}"
    )
    return hybrid_ok / n, keyword_ok / n


def test_rrf_fuses_ranks() -> None:
    fused = rrf([1, 2, 3], [3, 4])
    assert [cid for cid, _ in fused][:2] == [3, 1]  # in both lists beats first of one
    assert {cid for cid, _ in fused} == {1, 2, 3, 4}


async def test_hybrid_search_finds_paraphrases(tmp_path: Path) -> None:
    assert len(CAPTURES) >= 30 and len(QUERIES) >= 15
    store = HybridStore(SQLiteCaptureStore(str(tmp_path / "rel.db")), default_embedder())
    await store.start()
    try:
        await store.write_batch(relevance_captures())
        await store.index_pending()
        hybrid, keyword = await score(store, "sqlite")
        assert hybrid >= 0.8
        assert hybrid > keyword  # meaning adds something words alone miss
    finally:
        await store.close()


async def test_cache_is_invalidated_by_new_captures(tmp_path: Path) -> None:
    store = HybridStore(
        SQLiteCaptureStore(str(tmp_path / "c.db")), default_embedder(), cache_ttl=60
    )
    await store.start()
    try:
        q = SearchQuery("quantum entanglement")
        assert await store.search(q) == []
        assert await store.search(q) == []
        assert store.cache_hits == 1
        await store.write_batch(
            [Capture("s", "What is quantum entanglement?", "Linked particles.", time.time())]
        )
        hits = await store.search(q)
        assert [h.user_text for h in hits] == ["What is quantum entanglement?"]
    finally:
        await store.close()


class _SlowKeywordStore(SQLiteCaptureStore):
    """SQLite whose keyword search holds its (already computed) answer until released."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.answered = asyncio.Event()
        self.release = asyncio.Event()
        self.hold = False

    async def keyword_search(self, query: SearchQuery, k: int) -> list:
        hits = await super().keyword_search(query, k)
        if self.hold:
            self.answered.set()
            await self.release.wait()
        return hits


async def test_write_during_a_search_does_not_cache_the_stale_answer(tmp_path: Path) -> None:
    backend = _SlowKeywordStore(str(tmp_path / "race.db"))
    store = HybridStore(backend, None, cache_ttl=60)
    await store.start()
    try:
        q = SearchQuery("quantum entanglement")
        backend.hold = True
        searching = asyncio.create_task(store.search(q))
        await backend.answered.wait()  # the query ran before the capture was written
        await store.write_batch(
            [Capture("s", "What is quantum entanglement?", "Linked particles.", time.time())]
        )
        backend.hold = False
        backend.release.set()
        assert await searching == []
        hits = await store.search(q)
        assert [h.user_text for h in hits] == ["What is quantum entanglement?"]
    finally:
        await store.close()


class _SlowEmbedder:
    """The bundled embedder, taking `seconds` a batch (as a remote one can)."""

    def __init__(self, seconds: float) -> None:
        self._inner = default_embedder()
        self.name, self.dim = self._inner.name, self._inner.dim
        self.seconds = seconds
        self.started = threading.Event()

    def embed(self, texts):  # type: ignore[no-untyped-def]
        self.started.set()
        time.sleep(self.seconds)
        return self._inner.embed(texts)


async def test_close_waits_for_a_running_embedding_off_the_loop(tmp_path: Path) -> None:
    embedder = _SlowEmbedder(1.0)
    store = HybridStore(SQLiteCaptureStore(str(tmp_path / "slow.db")), embedder)
    await store.start()
    await store.write_batch([Capture("s", "Spaced repetition", "Reviews spread out.", time.time())])
    await asyncio.to_thread(embedder.started.wait, 5)  # the indexer is inside embed()
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    await store.close()
    ticker.cancel()
    assert time.monotonic() - started >= 0.5  # it did wait for the embedding
    assert max(gaps) < 0.3, max(gaps)  # ...without stopping the event loop


async def test_vector_only_hit_has_escaped_plain_snippet(tmp_path: Path) -> None:
    store = HybridStore(SQLiteCaptureStore(str(tmp_path / "v.db")), default_embedder())
    await store.start()
    try:
        await store.write_batch(
            [Capture("s", "Photosynthesis <b>in</b> leaves", "Sugar from light.", time.time())]
        )
        await store.index_pending()
        hits = await store.search(SearchQuery("greenery feeding on sunshine"))
        assert hits and hits[0].user_text.startswith("Photosynthesis")
        assert "&lt;b&gt;" in hits[0].snippet
    finally:
        await store.close()

"""Learners own their data, on SQLite: ownership, scoped search, deletion, forgetting,
retention, the writer's `forget` and the migration from schema version 1.

The tests taking `store` and `index_counts` are shared: test_storage_learners_pg.py
imports them and runs them on Postgres (exact cosine) and on pgvector (HNSW).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from pipelines.ports import Capture
from server.storage.base import LEGACY_LEARNER, SearchQuery
from server.storage.embedder import Embedder, default_embedder
from server.storage.hybrid import HybridStore
from server.storage.journal import read_segment
from server.storage.sqlite import SQLiteCaptureStore, _migrations, _split_sql
from server.storage.writer import CaptureWriter

A, B = "anon_ann", "phone_bob"
LONG = "Explain compound interest on my savings account " + "and what happens every year " * 4
# (learner, session, user text, agent text, seconds ago)
ROWS = [
    (A, "ann-1", "Photosynthesis turns sunlight into sugar in leaves", "Chlorophyll helps.", 4000),
    (A, "ann-1", "Why is marmalade bitter", "Seville oranges carry bitter peel.", 3900),
    (A, "ann-2", LONG, "Interest earns interest over time.", 3000),
    (A, "ann-2", "Quiz me on the French Revolution", "When did the Bastille fall?", 2900),
    (B, "bob-1", "How do cacti do photosynthesis at night", "They open stomata after dark.", 2000),
    (B, "bob-1", "Compound interest versus simple interest", "Simple ignores the earned.", 1900),
    (B, "bob-2", "Teach me the Krebs cycle", "It turns acetyl-CoA into CO2.", 1000),
    (B, "bob-2", "Is quince jam like marmalade", "Quince sets without added pectin.", 900),
]
IndexCounts = Callable[[str], Awaitable[tuple[int, int, int]]]


def dataset(now: float) -> list[Capture]:
    return [
        Capture(sid, user, agent, now - ago, {"i": i}, capture_id=f"cap-{i}", learner_id=who)
        for i, (who, sid, user, agent, ago) in enumerate(ROWS)
    ]


def fresh(*args: Any, **kwargs: Any) -> Capture:
    """A capture with an id of its own, as the writer would give it."""
    return Capture(*args, capture_id=uuid.uuid4().hex, **kwargs)


async def populate(store: HybridStore) -> list[Capture]:
    captures = dataset(time.time())
    await store.write_batch(captures)
    if store.embedder is not None:
        await store.index_pending()
    return captures


async def ids_of(store: HybridStore, learner: str) -> set[int]:
    return {c.id for c in await store.learner_history(learner, 10_000)}


async def meaning(store: HybridStore, query: SearchQuery, k: int) -> list[tuple[int, float]]:
    """The backend's vector ranking alone (no keywords, no fusion)."""
    assert store.embedder is not None
    vector = store.embedder.embed([query.query])[0]
    return await store.backend.vector_search(vector, query, k, store.embedder.name)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[HybridStore]:
    s = HybridStore(
        SQLiteCaptureStore(str(tmp_path / "learners.db")), default_embedder(), cache_ttl=60
    )
    await s.start()
    yield s
    await s.close()


@pytest.fixture
def index_counts(store: HybridStore) -> IndexCounts:
    """(FTS entries, vectors, FTS entries matching `word`) read straight from the file."""

    async def counts(word: str) -> tuple[int, int, int]:
        db = sqlite3.connect(store.backend.path)
        try:
            fts = db.execute("SELECT count(*) FROM captures_fts_docsize").fetchone()[0]
            vectors = db.execute("SELECT count(*) FROM capture_vectors").fetchone()[0]
            matching = db.execute(
                "SELECT count(*) FROM captures_fts WHERE captures_fts MATCH ?", (word,)
            ).fetchone()[0]
        finally:
            db.close()
        return fts, vectors, matching

    return counts


# --- shared by every backend -------------------------------------------------------------
async def test_search_never_returns_another_learners_captures(store: HybridStore) -> None:
    await populate(store)
    mine = {A: await ids_of(store, A), B: await ids_of(store, B)}
    assert len(mine[A]) == len(mine[B]) == 4
    queries = ["photosynthesis", "compound interest", "marmalade", "how greenery feeds on light"]
    for query in queries:
        for learner in (A, B):
            q = SearchQuery(query, limit=20, learner_id=learner)
            hybrid = {h.id for h in await store.search(q)}
            keyword = {h.id for h in await store.keyword_only(q)}
            by_meaning = {cid for cid, _ in await meaning(store, q, 50)}
            assert hybrid <= mine[learner], (query, learner)
            assert keyword <= mine[learner], (query, learner)
            # Filtered before ranking: all of the learner's embedded captures, none else.
            assert by_meaning == mine[learner], (query, learner)
    # Not vacuous: both learners match the word, and each finds their own.
    everyone = {h.id for h in await store.keyword_only(SearchQuery("photosynthesis"))}
    ann = {h.id for h in await store.keyword_only(SearchQuery("photosynthesis", learner_id=A))}
    assert len(everyone) == 2 and len(ann) == 1 and ann <= mine[A]
    bob = await store.search(SearchQuery("marmalade", learner_id=B))
    assert bob and bob[0].user_text == "Is quince jam like marmalade"


async def own_found_when_others_are_closer(store: HybridStore) -> None:
    """Bob has hundreds of captures worded exactly like the query; Ann has three far from
    it. Ann's search by meaning still returns her three, and only them. (Idempotent: a
    second call on the same store writes nothing new.)"""
    query = "how do vaccines teach the immune system to fight viruses"
    now = time.time()
    bob = [
        Capture(f"bob-{i % 5}", f"{query} {i}", "ok", now - i, capture_id=f"b{i}", learner_id=B)
        for i in range(300)
    ]
    ann_texts = ["sourdough starter feeding", "tuning a guitar by ear", "parallel parking tips"]
    ann = [
        Capture("ann-x", text, "ok", now, capture_id=f"a{i}", learner_id=A)
        for i, text in enumerate(ann_texts)
    ]
    await store.write_batch(bob + ann)
    await store.index_pending()
    mine = await ids_of(store, A)
    hits = await meaning(store, SearchQuery(query, learner_id=A), 3)
    assert {cid for cid, _ in hits} == mine and len(mine) == 3
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    hybrid = await store.search(SearchQuery(query, limit=3, learner_id=A))
    assert {h.id for h in hybrid} == mine
    # Bob, unfiltered by learner but by session, is not starved either.
    bob_hits = await meaning(store, SearchQuery(query, learner_id=B, session_id="bob-3"), 10)
    assert len(bob_hits) == 10


async def test_own_captures_found_when_others_are_closer(store: HybridStore) -> None:
    await own_found_when_others_are_closer(store)


async def test_claims_race_to_exactly_one_owner(store: HybridStore) -> None:
    for i in range(25):
        sid = f"race-{i}"
        first, second = await asyncio.gather(
            store.claim_session(sid, A), store.claim_session(sid, B)
        )
        assert first == second and first in (A, B)
        assert await store.session_owner(sid) == first
        assert await store.claim_session(sid, B) == first
        assert await store.claim_session(sid, A) == first
    assert await store.session_owner("never-claimed") is None
    with pytest.raises(ValueError):
        await store.claim_session("s", "not an id!")
    with pytest.raises(ValueError):
        await store.claim_session("s", "x" * 65)


async def test_list_sessions_and_learner_history(store: HybridStore) -> None:
    captures = await populate(store)
    assert await store.claim_session("ann-empty", A) == A
    listed = await store.list_sessions(A, 10)
    assert [s.session_id for s in listed] == ["ann-empty", "ann-2", "ann-1"]
    assert [s.captures for s in listed] == [0, 2, 2]
    assert [s.title for s in listed] == ["", " ".join(LONG.split())[:80], ROWS[0][2]]
    assert len(listed[1].title) == 80
    assert all(s.learner_id == A for s in listed)
    assert listed[0].last_at == listed[0].created_at
    assert abs(listed[1].last_at - captures[3].timestamp) < 0.01
    assert abs(listed[2].created_at - captures[0].timestamp) < 0.01
    assert [s.session_id for s in await store.list_sessions(A, 1)] == ["ann-empty"]
    assert [s.session_id for s in await store.list_sessions(B, 10)] == ["bob-2", "bob-1"]
    assert await store.list_sessions("anon_nobody", 10) == []

    history = await store.learner_history(A, 100)
    assert [h.user_text for h in history] == [r[2] for r in ROWS[:4]]
    assert {h.learner_id for h in history} == {A}
    newest = await store.learner_history(A, 2)
    assert [h.user_text for h in newest] == [ROWS[2][2], ROWS[3][2]]
    assert [h.user_text for h in await store.history("bob-1", 10)] == [ROWS[4][2], ROWS[5][2]]


async def test_capture_is_stored_under_its_sessions_owner(store: HybridStore) -> None:
    now = time.time()
    assert await store.claim_session("ann-s", A) == A
    await store.write_batch(
        [
            fresh("ann-s", "no learner given", "a", now),  # inherits the owner
            fresh("ann-s", "bob writing into ann's session", "a", now, learner_id=B),
            fresh("bob-new", "first capture claims", "a", now, learner_id=B),
            fresh("bob-new", "ann cannot join it", "a", now + 1, learner_id=A),
            fresh("old-client", "no learner, no owner", "a", now),
        ]
    )
    assert [(h.user_text, h.learner_id) for h in await store.history("ann-s", 10)] == [
        ("no learner given", A)
    ]
    assert [h.user_text for h in await store.history("bob-new", 10)] == ["first capture claims"]
    assert await store.session_owner("bob-new") == B
    assert await store.session_owner("old-client") == LEGACY_LEARNER
    assert [h.learner_id for h in await store.history("old-client", 10)] == [LEGACY_LEARNER]


async def test_delete_session_removes_captures_and_index_entries_for_good(
    store: HybridStore, index_counts: IndexCounts
) -> None:
    captures = await populate(store)
    fts, vectors, matching = await index_counts("marmalade")
    assert (fts, vectors, matching) == (8, 8, 2)
    assert await store.search(SearchQuery("marmalade", learner_id=A))
    bob_before = await store.learner_history(B, 100)

    assert await store.delete_session("ann-1") == 2
    assert await index_counts("marmalade") == (6, 6, 1)
    for learner in (A, None):  # the owner's and an operator's view alike
        q = SearchQuery("why is marmalade bitter", learner_id=learner)
        texts = {h.user_text for h in await store.search(q)}
        texts |= {h.user_text for h in await store.keyword_only(q)}
        assert not texts & {ROWS[0][2], ROWS[1][2]}
    # The vector index let go of them too (not merely hidden by the fusion step).
    by_meaning = await meaning(store, SearchQuery("why is marmalade bitter", learner_id=A), 50)
    assert {cid for cid, _ in by_meaning} == await ids_of(store, A) != set()
    assert await store.history("ann-1", 10) == []
    assert [s.session_id for s in await store.list_sessions(A, 10)] == ["ann-2"]
    assert await store.session_owner("ann-1") == A  # the id stays hers...
    assert await store.claim_session("ann-1", B) == A  # ...and nobody else's

    # What a journal replayed elsewhere, or a live session elsewhere, would write now.
    late = fresh("ann-1", "still talking", "ok", time.time(), learner_id=A)
    await store.write_batch([captures[0], captures[1], late])
    await store.index_pending()
    assert await store.history("ann-1", 10) == []
    assert await index_counts("marmalade") == (6, 6, 1)
    assert await store.learner_history(B, 100) == bob_before
    assert await store.delete_session("no-such-session") == 0

    # The rest keeps working: a new capture gets a new id, a vector, and is found.
    await store.write_batch([fresh("ann-2", "Teach me about tardigrades", "ok", time.time())])
    await store.index_pending()
    assert await index_counts("tardigrades") == (7, 7, 1)
    (newest,) = await store.learner_history(A, 1)
    assert newest.id > max(await ids_of(store, B))
    found = await store.search(SearchQuery("tardigrades", learner_id=A))
    assert found[0].id == newest.id


async def test_forget_learner_erases_them_and_refuses_their_captures(
    store: HybridStore, index_counts: IndexCounts
) -> None:
    await populate(store)
    await store.claim_session("ann-empty", A)
    bob_before = await store.learner_history(B, 100)
    bob_sessions = await store.list_sessions(B, 10)
    assert not await store.is_forgotten(A)

    assert await store.forget_learner(A) == 4
    assert await store.is_forgotten(A) and not await store.is_forgotten(B)
    assert await index_counts("marmalade") == (4, 4, 1)
    assert await store.learner_history(A, 100) == []
    assert await store.list_sessions(A, 10) == []
    assert await store.search(SearchQuery("photosynthesis", learner_id=A)) == []
    assert await meaning(store, SearchQuery("photosynthesis", learner_id=A), 50) == []
    everyone = await store.search(SearchQuery("photosynthesis sugar sunlight leaves"))
    assert everyone and {h.session_id for h in everyone} <= {"bob-1", "bob-2"}

    now = time.time()
    await store.write_batch(
        [
            fresh("ann-2", "replayed from a journal", "ok", now, learner_id=A),
            fresh("ann-3", "a new session of hers", "ok", now, learner_id=A),
            fresh("ann-empty", "no learner given", "ok", now),
        ]
    )
    assert await store.learner_history(A, 100) == []
    assert await store.session_owner("ann-3") is None
    assert await store.claim_session("ann-4", A) == A  # answered, but nothing recorded
    assert await store.list_sessions(A, 10) == []
    assert await index_counts("journal") == (4, 4, 0)

    assert await store.learner_history(B, 100) == bob_before
    assert await store.list_sessions(B, 10) == bob_sessions
    assert await store.search(SearchQuery("Krebs", learner_id=B))
    assert await store.forget_learner(A) == 0


async def keep_writing(store: HybridStore, sid: str, learner: str, stop: asyncio.Event) -> None:
    """Write batches of 50 captures into a session until told to stop."""
    while not stop.is_set():
        await store.write_batch(
            [fresh(sid, "x", "y", time.time(), learner_id=learner) for _ in range(50)]
        )


async def test_batches_in_flight_never_bring_erased_captures_back(store: HybridStore) -> None:
    """Batches keep landing in a session while it is deleted (or its learner forgotten):
    afterwards nothing of it is left, whichever commits first."""
    for round_ in range(20):
        learner = f"anon_racer{round_}"
        sid = f"busy-{round_}"
        await store.claim_session(sid, learner)
        stop = asyncio.Event()
        writers = [asyncio.create_task(keep_writing(store, sid, learner, stop)) for _ in range(3)]
        await asyncio.sleep(0.02)
        if round_ % 2:
            await store.forget_learner(learner)
        else:
            await store.delete_session(sid)
        stop.set()
        await asyncio.gather(*writers)
        assert await store.history(sid, 10) == [], round_
        assert await store.learner_history(learner, 10) == [], round_


async def test_retention_deletes_old_captures_and_keeps_who_owns_each_session(
    store: HybridStore, index_counts: IndexCounts
) -> None:
    captures = await populate(store)
    now = time.time()
    await store.write_batch([fresh("ann-old", "very old", "ok", now - 9000, learner_id=A)])
    await store.index_pending()
    await store.claim_session("ann-new", A)  # young, empty: kept
    cutoff = now - 2500  # keeps only Bob's (2000 s old and younger)

    assert await store.delete_older_than(cutoff) == 5
    assert await index_counts("marmalade") == (4, 4, 1)
    emptied = {s.session_id: s.captures for s in await store.list_sessions(A, 10)}
    assert emptied["ann-new"] == 0 and set(emptied.values()) == {0}
    # An emptied id is still Ann's: nobody else can claim it (and read its Redis context).
    assert await store.claim_session("ann-old", B) == A
    assert [s.session_id for s in await store.list_sessions(B, 10)] == ["bob-2", "bob-1"]
    kept = [h.user_text for h in await store.learner_history(B, 10)]
    assert kept == [c.user_text for c in captures[4:]]
    assert await store.search(SearchQuery("why is marmalade bitter", learner_id=A)) == []
    assert await meaning(store, SearchQuery("marmalade", learner_id=A), 50) == []
    assert await store.delete_older_than(cutoff) == 0


async def test_query_cache_is_per_learner_and_cleared_by_deletion(store: HybridStore) -> None:
    await populate(store)
    q = "photosynthesis"
    ann = await store.search(SearchQuery(q, learner_id=A))
    bob = await store.search(SearchQuery(q, learner_id=B))
    assert ann and bob and {h.id for h in ann}.isdisjoint(h.id for h in bob)
    assert await store.search(SearchQuery(q, learner_id=A)) == ann
    hits_before = store.cache_hits
    await store.search(SearchQuery(q, learner_id=A))
    assert store.cache_hits == hits_before + 1
    await store.delete_session("ann-1")
    after = await store.search(SearchQuery(q, learner_id=A))
    assert ROWS[0][2] not in {h.user_text for h in after}


# --- SQLite only --------------------------------------------------------------------------
def version_1_database(path: Path, captures: Sequence[Capture], embedder: Embedder) -> None:
    """A file as the previous release left it: migration 001 only, rows and vectors."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA foreign_keys=ON")
    ((number, sql),) = [m for m in _migrations() if m[0] == 1]
    for statement in _split_sql(sql):
        db.execute(statement)
    db.execute(f"PRAGMA user_version={number}")
    vectors = embedder.embed([f"{c.user_text}\n{c.agent_text}" for c in captures])
    for i, c in enumerate(captures, start=1):
        db.execute(
            "INSERT INTO captures (id, capture_id, session_id, timestamp, user_text, "
            "agent_text) VALUES (?, ?, ?, ?, ?, ?)",
            (i, c.capture_id, c.session_id, c.timestamp, c.user_text, c.agent_text),
        )
        db.execute(
            "INSERT INTO capture_vectors (id, model, vector) VALUES (?, ?, ?)",
            (i, embedder.name, vectors[i - 1].astype("float32").tobytes()),
        )
    db.close()


async def test_migration_from_version_1_makes_old_rows_legacy(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    now = time.time()
    old = [
        Capture(sid, user, agent, now - ago, capture_id=f"old-{i}")
        for i, (_, sid, user, agent, ago) in enumerate(ROWS)
    ]
    embedder = default_embedder()
    version_1_database(path, old, embedder)
    store = HybridStore(SQLiteCaptureStore(str(path)), embedder)
    await store.start()
    try:
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert db.execute("SELECT DISTINCT learner_id FROM captures").fetchall() == [("legacy",)]
        # The table was rebuilt: its vectors did not go with the old one.
        assert db.execute("SELECT count(*) FROM capture_vectors").fetchone()[0] == 8
        db.close()
        assert await store.index_pending() == 0  # nothing to embed again
        legacy = SearchQuery("marmalade", learner_id=LEGACY_LEARNER)
        assert len(await store.keyword_only(legacy)) == 2
        assert await store.keyword_only(SearchQuery("marmalade", learner_id=A)) == []
        assert len(await meaning(store, legacy, 50)) == 8
        listed = await store.list_sessions(LEGACY_LEARNER, 10)
        assert [s.session_id for s in listed] == ["bob-2", "bob-1", "ann-2", "ann-1"]
        assert [s.captures for s in listed] == [2, 2, 2, 2]
        assert await store.session_owner("ann-1") == LEGACY_LEARNER
        # Ids never come back once the newest capture is deleted (AUTOINCREMENT now).
        assert await store.delete_session("bob-2") == 2
        await store.write_batch([fresh("bob-1", "after the upgrade", "ok", time.time())])
        (newest,) = await store.history("bob-1", 1)
        assert newest.id == 9 and newest.learner_id == LEGACY_LEARNER
    finally:
        await store.close()


def journaled(root: Path) -> list[Capture]:
    out: list[Capture] = []
    for segment in sorted(root.glob("slot-*/*.jsonl")):
        out += read_segment(segment)[0]
    return out


class Switch:
    """A real store behind an on/off switch (off = the database is down)."""

    def __init__(self, inner: HybridStore) -> None:
        self.inner = inner
        self.down = False

    async def write_batch(self, captures: Sequence[Capture]) -> None:
        if self.down:
            raise ConnectionError("database is down")
        await self.inner.write_batch(captures)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_writer_forget_drops_queued_captures(store: HybridStore, tmp_path: Path) -> None:
    writer = CaptureWriter(store, 100, 10_000, 10_000, str(tmp_path / "j"))
    await writer.start()
    for c in dataset(time.time()):
        writer.submit(c)
    assert writer.depth == 8  # flush_ms is 10 s: all still queued
    with pytest.raises(ValueError):
        await writer.forget()
    assert await writer.forget(session_id="bob-2") == 2
    assert await writer.forget(learner_id=A, session_id="ann-2") == 2
    assert await writer.forget(learner_id=A) == 2
    assert await writer.forget(learner_id=A) == 0
    await writer.close()
    assert await store.learner_history(A, 10) == []
    assert [h.session_id for h in await store.learner_history(B, 10)] == ["bob-1", "bob-1"]


async def test_writer_forget_rewrites_the_journal(store: HybridStore, tmp_path: Path) -> None:
    root = tmp_path / "j"
    switch = Switch(store)
    switch.down = True
    writer = CaptureWriter(switch, 4, 5, 100, str(root))
    await writer.start()
    try:
        captures = dataset(time.time())
        for c in captures:
            writer.submit(c)
        await until(lambda: writer.journal_backlog == 8 and writer.depth == 0)
        writer.submit(Capture("ann-2", "queued while down", "ok", time.time(), learner_id=A))
        # Captures of Ann's are on disk; forgetting her rewrites the segments without them.
        assert await writer.forget(learner_id=A) == 5
        on_disk = journaled(root)
        assert {c.learner_id for c in on_disk} == {B}
        assert sorted(c.capture_id for c in on_disk) == [c.capture_id for c in captures[4:]]
        assert writer.journal_backlog == 4
        assert not list(root.glob("slot-*/*.rewrite"))
        for segment in root.glob("slot-*/*.jsonl"):
            assert b"anon_ann" not in segment.read_bytes()
        assert await writer.forget(session_id="bob-2") == 2
        assert writer.journal_backlog == 2
        switch.down = False
        await until(lambda: writer.healthy and writer.journal_backlog == 0 and not writer.depth)
    finally:
        await writer.close()
    assert await store.learner_history(A, 10) == []
    assert [h.user_text for h in await store.learner_history(B, 10)] == [ROWS[4][2], ROWS[5][2]]
    assert not list(root.glob("slot-*/*.jsonl"))


async def test_journal_replayed_after_a_deletion_stays_deleted(
    store: HybridStore, tmp_path: Path
) -> None:
    """Another instance's journal (not forgotten there) replays into a deleted session."""
    root = tmp_path / "other-instance"
    switch = Switch(store)
    switch.down = True
    writer = CaptureWriter(switch, 4, 5, 100, str(root))
    await writer.start()
    for c in dataset(time.time()):
        writer.submit(c)
    await writer.close()  # a shutdown during the outage: all 8 stay journaled
    assert len(journaled(root)) == 8
    await store.claim_session("ann-1", A)
    await store.claim_session("bob-1", B)
    assert await store.delete_session("ann-1") == 0
    assert await store.forget_learner(B) == 0
    replayer = CaptureWriter(store, 4, 5, 100, str(root))
    await replayer.start()
    await until(lambda: replayer.journal_backlog == 0)
    await replayer.close()
    assert [h.session_id for h in await store.learner_history(A, 10)] == ["ann-2", "ann-2"]
    assert await store.learner_history(B, 10) == []

"""CaptureWriter + journal on a real SQLite store: batches, outages, restarts, no loss."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from pipelines.ports import Capture
from server.storage.sqlite import SQLiteCaptureStore
from server.storage.writer import CaptureWriter


class Flaky:
    """A real store behind a switch: `down` raises before writing, `lose_ack` after."""

    def __init__(self, inner: SQLiteCaptureStore) -> None:
        self.inner = inner
        self.down = False
        self.lose_ack = False
        self.calls = 0
        self.delay = 0.0

    async def write_batch(self, captures: Sequence[Capture]) -> None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise ConnectionError("database is down")
        await self.inner.write_batch(captures)
        if self.lose_ack:
            raise TimeoutError("written, but the acknowledgement was lost")


def caps(n: int, start: int = 0) -> list[Capture]:
    return [
        Capture(f"s{i % 7}", f"user {i}", f"agent {i}", time.time(), {"n": i})
        for i in range(start, start + n)
    ]


async def count(store: SQLiteCaptureStore) -> tuple[int, int]:
    def q(db):  # type: ignore[no-untyped-def]
        return db.execute("SELECT count(*), count(DISTINCT capture_id) FROM captures").fetchone()

    return await store._run(q)


async def wait_for(pred, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def open_store(tmp_path: Path) -> SQLiteCaptureStore:
    store = SQLiteCaptureStore(str(tmp_path / "c.db"))
    await store.start()
    return store


async def test_batches_and_clean_shutdown_flushes_everything(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    flaky = Flaky(store)
    writer = CaptureWriter(flaky, 50, 10_000, 10_000, str(tmp_path / "j"))
    await writer.start()
    for c in caps(420):
        writer.submit(c)
    assert writer.depth > 0  # nothing written synchronously
    await writer.close()  # flush_ms is 10 s: only close() can have written them
    assert await count(store) == (420, 420)
    assert flaky.calls == 9  # 8 full batches of 50 + 1 of 20
    await store.close()


async def test_outage_then_recovery_every_capture_exactly_once(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    flaky = Flaky(store)
    writer = CaptureWriter(flaky, 40, 5, 100, str(tmp_path / "j"))
    await writer.start()
    flaky.down = True
    for c in caps(300):
        writer.submit(c)
        await asyncio.sleep(0)
    await wait_for(lambda: _true(writer.journal_backlog >= 300 and writer.depth == 0))
    assert not writer.healthy
    assert await count(store) == (0, 0)
    flaky.down = False
    for c in caps(50, start=300):
        writer.submit(c)
    await wait_for(lambda: _eq(count(store), (350, 350)))
    await wait_for(lambda: _true(writer.journal_backlog == 0 and writer.healthy))
    assert writer.dropped == 0
    await writer.close()
    assert list((tmp_path / "j").glob("slot-*/*.jsonl")) == []
    await store.close()


async def test_lost_acknowledgement_is_replayed_without_duplicates(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    flaky = Flaky(store)
    flaky.lose_ack = True
    writer = CaptureWriter(flaky, 25, 5, 1000, str(tmp_path / "j"))
    await writer.start()
    for c in caps(100):
        writer.submit(c)
    await wait_for(lambda: _true(flaky.calls >= 1))
    flaky.lose_ack = False
    done = lambda: _true(not writer.journal_backlog and writer.healthy and not writer.depth)  # noqa: E731
    await wait_for(done)
    assert await count(store) == (100, 100)
    await writer.close()
    await store.close()


async def test_full_queue_spills_to_journal_without_blocking(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    flaky = Flaky(store)
    flaky.delay = 0.05  # a slow database
    writer = CaptureWriter(flaky, 10, 5, 20, str(tmp_path / "j"))
    await writer.start()
    t0 = time.perf_counter()
    for c in caps(1000):
        writer.submit(c)
    assert time.perf_counter() - t0 < 0.5  # 1000 submits never waited on the store
    assert writer.depth <= 20 and writer.journal_backlog >= 980
    flaky.delay = 0
    await wait_for(lambda: _eq(count(store), (1000, 1000)), timeout=30)
    await writer.close()
    await store.close()


async def test_shutdown_during_outage_journals_and_next_start_replays(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    flaky = Flaky(store)
    flaky.down = True
    writer = CaptureWriter(flaky, 50, 5, 10_000, str(tmp_path / "j"))
    await writer.start()
    for c in caps(120):
        writer.submit(c)
    await writer.close()
    assert await count(store) == (0, 0)
    assert len(list((tmp_path / "j").glob("slot-0/*.jsonl"))) >= 1
    # "restart": a new writer on the same journal directory and a healthy store
    writer2 = CaptureWriter(store, 50, 5, 10_000, str(tmp_path / "j"))
    await writer2.start()
    assert writer2.journal_backlog == 120
    await wait_for(lambda: _eq(count(store), (120, 120)))
    await wait_for(lambda: _true(writer2.journal_backlog == 0))
    await writer2.close()
    await store.close()


async def test_capture_ids_are_filled(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    writer = CaptureWriter(store, 10, 5, 100, None)
    await writer.start()
    writer.submit(Capture("s", "same text", "same reply", 1.0))
    writer.submit(Capture("s", "same text", "same reply", 1.0))
    await writer.close()
    assert await count(store) == (2, 2)  # two distinct exchanges, two distinct ids
    await store.close()


async def _true(value: bool) -> bool:
    return value


async def _eq(aw, expected) -> bool:  # type: ignore[no-untyped-def]
    return await aw == expected


async def test_drops_are_counted_each_and_logged_in_summaries(tmp_path: Path, caplog) -> None:
    """A journal that cannot take more (no journal, queue past its bound): every dropped
    capture is counted at once, the log gets the first at once and then one line per
    `DROP_LOG_EVERY_S` with the count since, and close logs what is still unlogged; the
    counts of the lines add up to the total (before, one error line per capture)."""
    import logging

    class NeverCalled:
        async def write_batch(self, captures: Sequence[Capture]) -> None:
            raise AssertionError("not started")

    writer = CaptureWriter(NeverCalled(), 10, 50, 2, None)
    with caplog.at_level(logging.ERROR, logger="server.storage.writer"):
        for c in caps(504):  # 2 queued, 2 kept past the bound, 500 dropped
            writer.submit(c)
        assert writer.dropped == 500
        lines = [r for r in caplog.records if r.getMessage() == "captures dropped"]
        assert len(lines) == 1 and lines[0].count == 1
        await writer.close()
    lines = [r for r in caplog.records if r.getMessage() == "captures dropped"]
    assert len(lines) == 2 and sum(r.count for r in lines) == 500
    assert lines[-1].total == 500 and lines[-1].reason == "queue full and no journal"

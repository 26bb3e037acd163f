"""Writes captures to the store in batches, off the voice loop's path, losing none.

`submit()` is synchronous and O(1): it appends to a bounded in-memory queue, or, when the
queue is full, to the on-disk journal. One background task batches the queue into
`store.write_batch` calls. When the store fails, the batch in hand is journaled (fsynced)
and the task keeps moving the queue to the journal while it retries the store with
exponential backoff by replaying the journal's oldest segment. Journal entries are deleted
only after the store accepted them; `capture_id` makes a replay after a crash harmless.

`forget()` takes a learner's or a session's captures out of the queue and out of this
process's journal (other processes' journals are stopped at the store, which refuses
captures of deleted sessions and forgotten learners).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pipelines.ports import Capture
from server.storage.journal import Journal, read_segment, rewrite_segment

log = logging.getLogger(__name__)

BACKOFF_START = 0.1
BACKOFF_MAX = 5.0
CLOSE_STORE_TIMEOUT = 10.0
DEFAULT_JOURNAL_MAX_BYTES = 512 * 1024 * 1024
#: Captures dropped (journal full) are counted at once (`dropped`) and logged: the first
#: at once, then at most one line per this many seconds with the count since the last
#: one, so a full disk under load does not write one error line per capture.
DROP_LOG_EVERY_S = 5.0


class BatchStore(Protocol):
    async def write_batch(self, captures: list[Capture]) -> None: ...


class CaptureWriter:
    """CaptureSink with batching, a disk journal and retry (see module docstring)."""

    def __init__(
        self,
        store: BatchStore,
        batch_size: int,
        flush_ms: int,
        queue_max: int,
        journal_dir: str | None,
        journal_max_bytes: int = DEFAULT_JOURNAL_MAX_BYTES,
        on_written: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._batch_size = batch_size
        self._flush = flush_ms / 1000
        self._queue: deque[Capture] = deque()
        self._queue_max = queue_max
        self._journal = Journal(journal_dir, journal_max_bytes) if journal_dir else None
        self._on_written = on_written
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failing = False
        self._backoff = BACKOFF_START
        self._retry_at = 0.0
        self._needs_sync = False
        self._in_flight: list[Capture] = []
        # Held while a journal segment is replayed and while forget() rewrites segments,
        # so a segment is never rewritten between its replay's read and its removal.
        self._segments_lock = asyncio.Lock()
        self.written = 0
        self.dropped = 0
        self._unlogged_drops = 0
        self._drop_reason = ""
        self._drop_log_at = 0.0
        self.failed_batches = 0
        self.last_error = ""

    # --- CaptureSink -----------------------------------------------------------------
    def submit(self, capture: Capture) -> None:
        """Queue a capture; never blocks, never raises for a full queue."""
        if not capture.capture_id:
            capture = dataclasses.replace(capture, capture_id=uuid.uuid4().hex)
        if len(self._queue) < self._queue_max and not self._closed_for_memory():
            self._queue.append(capture)
        else:
            self._spill([capture])
        self._wake.set()

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def journal_backlog(self) -> int:
        return self._journal.entries if self._journal else 0

    @property
    def healthy(self) -> bool:
        return not self._failing

    async def forget(self, learner_id: str | None = None, session_id: str | None = None) -> int:
        """Drop the queued and journaled captures matching every given id; how many.

        A batch already being written is not recalled: the store's own deletion, which
        the caller runs too, removes or refuses it. While the store is down a replay may
        hold the journal for one store timeout before this can rewrite it."""
        if learner_id is None and session_id is None:
            raise ValueError("forget needs a learner_id or a session_id")

        def matches(c: Capture) -> bool:
            return (learner_id is None or c.learner_id == learner_id) and (
                session_id is None or c.session_id == session_id
            )

        dropped = self._forget_queued(matches)
        if self._journal is not None:
            dropped += await self._forget_journaled(self._journal, matches)
        if dropped:
            log.info("captures forgotten before being written", extra={"count": dropped})
        return dropped

    def _forget_queued(self, matches: Callable[[Capture], bool]) -> int:
        before = len(self._queue)
        self._queue = deque(c for c in self._queue if not matches(c))
        return before - len(self._queue)

    async def _forget_journaled(self, journal: Journal, matches: Callable[[Capture], bool]) -> int:
        """Rewrite every segment on disk without the matching captures."""
        dropped = 0
        async with self._segments_lock:
            journal.seal()  # the tail too: later appends go to a new segment
            self._needs_sync = True
            for segment in journal.sealed_segments():
                lines, nbytes = await asyncio.to_thread(rewrite_segment, segment, matches)
                journal.shrunk(lines, nbytes)
                dropped += lines
            await self._sync_journal()
        return dropped

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._journal is not None:
            await asyncio.to_thread(self._journal.open)
            if self._journal.entries:
                log.info("journal: replaying", extra={"captures": self._journal.entries})
        self._task = asyncio.create_task(self._run(), name="capture-writer")

    async def close(self) -> None:
        """Flush everything: to the store if it answers, otherwise to the journal."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), CLOSE_STORE_TIMEOUT)
            except TimeoutError:
                log.warning("capture store too slow at shutdown; journaling the rest")
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        leftover = self._in_flight + list(self._queue)
        self._in_flight = []
        self._queue.clear()
        if leftover:
            self._spill(leftover)
        self._log_drops(force=True)
        if self._journal is not None:
            await asyncio.to_thread(self._journal.close)

    # --- the background task -----------------------------------------------------------
    async def _run(self) -> None:
        while not self._closing:
            self._log_drops()  # what was dropped since the last line, once it is due
            if self._failing:
                await self._while_failing()
            elif self._replayable():
                await self._replay_one()
            else:
                batch = await self._next_batch()
                if batch:
                    await self._write(batch)
        await self._drain_for_close()

    async def _drain_for_close(self) -> None:
        """Memory to the store (or to the journal if the store fails); the journal waits."""
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
            if self._failing:
                self._spill(batch)
            else:
                await self._write(batch)
        await self._sync_journal()

    async def _next_batch(self) -> list[Capture]:
        """Wait for a first capture, then until the batch is full or flush_ms passed."""
        if not self._queue:
            self._wake.clear()
            if self._closing:
                return []
            await self._wait_wake(None)
            if not self._queue:
                await self._sync_journal()
                return []
        deadline = time.monotonic() + self._flush
        while len(self._queue) < self._batch_size and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wake.clear()
            await self._wait_wake(remaining)
        n = min(self._batch_size, len(self._queue))
        return [self._queue.popleft() for _ in range(n)]

    async def _write(self, batch: list[Capture]) -> None:
        self._in_flight = batch  # if close() cancels us mid-write, it journals these
        try:
            await self._store.write_batch(batch)
        except Exception as exc:
            self._in_flight = []
            self._enter_failing(exc)
            self._spill(batch)
            await self._sync_journal()
            return
        self._in_flight = []
        self._written(len(batch))

    async def _while_failing(self) -> None:
        """Keep memory free by journaling it; retry the store when the backoff says so."""
        if self._queue:
            batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
            self._spill(batch)
            await self._sync_journal()
            return
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            self._wake.clear()
            await self._wait_wake(wait)
            await self._sync_journal()
            return
        if self._journal is None:  # nothing on disk to retry from: retry from memory
            self._failing = False
            return
        await self._replay_one()

    async def _replay_one(self) -> bool:
        """Write the oldest journal segment to the store; delete it on success."""
        async with self._segments_lock:
            return await self._replay_oldest()

    async def _replay_oldest(self) -> bool:
        assert self._journal is not None
        if self._journal.oldest_sealed() is None:
            self._journal.seal()
            self._needs_sync = True
            await self._sync_journal()
        segment = self._journal.oldest_sealed()
        if segment is None:  # nothing on disk after all
            self._journal.entries = 0
            self._failing = False
            return True
        captures, lines = await asyncio.to_thread(read_segment, segment)
        try:
            for i in range(0, len(captures), self._batch_size):
                await self._store.write_batch(captures[i : i + self._batch_size])
        except Exception as exc:
            self._enter_failing(exc)
            return False
        self._journal.remove(segment, lines)
        if self._failing:
            log.info("capture store is back", extra={"journal_left": self._journal.entries})
        self._failing = False
        self._backoff = BACKOFF_START
        self._written(len(captures))
        return True

    # --- helpers ---------------------------------------------------------------------
    def _replayable(self) -> bool:
        return self._journal is not None and self._journal.entries > 0

    def _closed_for_memory(self) -> bool:
        """While failing (with a journal) new captures go straight to disk."""
        return self._failing and self._journal is not None and not self._closing

    def _spill(self, captures: list[Capture]) -> None:
        if self._journal is None:
            # No journal configured: keep them in memory past the bound rather than drop.
            if len(self._queue) + len(captures) <= self._queue_max * 2:
                self._queue.extend(captures)
                return
            self._drop(len(captures), "queue full and no journal")
            return
        kept = self._journal.append(captures)
        self._needs_sync = True
        if kept < len(captures):
            disk = self._journal.disk_error
            self._drop(len(captures) - kept, f"journal disk: {disk}" if disk else "journal full")

    def _drop(self, n: int, why: str) -> None:
        self.dropped += n
        self._unlogged_drops += n
        self._drop_reason = why
        self._log_drops()

    def _log_drops(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._unlogged_drops and (force or now >= self._drop_log_at):
            log.error(
                "captures dropped",
                extra={
                    "count": self._unlogged_drops,
                    "total": self.dropped,
                    "reason": self._drop_reason,
                },
            )
            self._unlogged_drops = 0
            self._drop_log_at = now + DROP_LOG_EVERY_S

    async def _sync_journal(self) -> None:
        if self._journal is None or not self._needs_sync:
            return
        self._needs_sync = False
        tail_fd, sealed = self._journal.take_sync_work()
        try:
            await asyncio.to_thread(Journal.fsync, tail_fd, sealed)
        except OSError as exc:  # a failing disk: the lines are written, their sync is not
            log.error("journal: fsync failed", extra={"error": repr(exc)[:200]})
            self._journal.sync_failed(sealed)
            self._needs_sync = True
            return
        self._journal.synced(sealed)

    def _enter_failing(self, exc: Exception) -> None:
        if not self._failing:
            log.warning("capture store failing; journaling", extra={"error": repr(exc)[:200]})
        self._failing = True
        self.failed_batches += 1
        self.last_error = repr(exc)[:200]
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _written(self, n: int) -> None:
        self.written += n
        if self._on_written is not None:
            self._on_written()

    async def _wait_wake(self, timeout: float | None) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        # that lands as the wait ends (the task then never stops).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()


def default_journal_dir(database_path: str) -> str:
    """`journal/` beside the SQLite file (or ./data/journal for a bare file name)."""
    parent = Path(database_path).resolve().parent
    return str(parent / "journal") if Path(database_path).parent != Path() else "data/journal"

"""The model executor with real threads: fair turns across sessions (the one that used the
threads least goes next), the owner taken from the session's context, droppable work,
cancellation, errors and shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable

import pytest

from pipelines.executor import ModelExecutor, Skipped, work_owner


@pytest.fixture
async def pool() -> AsyncIterator[ModelExecutor]:
    executor = ModelExecutor(workers=1, max_queued=4)
    yield executor
    executor.shutdown()


class Log:
    """Records which jobs ran, in order; `gate` holds the first job until it is opened."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.gate = threading.Event()
        self.started = threading.Event()

    def job(self, name: str) -> Callable[[], str]:
        def run() -> str:
            self.ran.append(name)
            return name

        return run

    def blocker(self) -> str:
        self.started.set()
        assert self.gate.wait(10)
        self.ran.append("blocker")
        return "blocker"


async def until(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not cond():  # noqa: ASYNC110 (state of worker threads)
            await asyncio.sleep(0.005)


async def test_a_backlog_does_not_delay_another_session(pool: ModelExecutor) -> None:
    log = Log()
    tasks = [asyncio.create_task(pool.run(log.blocker, owner="flood"))]
    await asyncio.to_thread(log.started.wait, 5)
    tasks += [asyncio.create_task(pool.run(log.job(f"f{i}"), owner="flood")) for i in range(6)]
    await until(lambda: pool.waiting == 6)
    tasks.append(asyncio.create_task(pool.run(log.job("learner"), owner="learner")))
    await until(lambda: pool.waiting == 7)
    log.gate.set()
    await asyncio.gather(*tasks)
    # The flood's job that was running finishes; then the learner, who used nothing yet.
    assert log.ran == ["blocker", "learner", *(f"f{i}" for i in range(6))]


async def test_the_owner_is_the_session_of_the_context(pool: ModelExecutor) -> None:
    log = Log()
    blocked = asyncio.create_task(pool.run(log.blocker, owner="flood"))
    await asyncio.to_thread(log.started.wait, 5)

    async def session(owner: str, names: list[str]) -> None:
        work_owner.set(owner)  # what a Session does when it is entered
        await asyncio.gather(*(pool.run(log.job(n)) for n in names))

    flood = asyncio.create_task(session("flood", ["f0", "f1", "f2"]))
    await until(lambda: pool.waiting == 3)
    learner = asyncio.create_task(session("learner", ["l0"]))
    await until(lambda: pool.waiting == 4)
    log.gate.set()
    await asyncio.gather(blocked, flood, learner)
    assert log.ran == ["blocker", "l0", "f0", "f1", "f2"]


async def test_results_errors_and_work_time(pool: ModelExecutor) -> None:
    seen: list[tuple[str, float]] = []
    pool.on_work = lambda stage, seconds: seen.append((stage, seconds))
    assert await pool.run(lambda x, y: x + y, 2, 3, stage="stt", owner="s") == 5

    def fails() -> None:
        raise ValueError("bad audio")

    with pytest.raises(ValueError, match="bad audio"):
        await pool.run(fails, stage="tts", owner="s")
    assert [stage for stage, _ in seen] == ["stt", "tts"]
    assert all(seconds >= 0 for _, seconds in seen)
    assert pool.busy_seconds >= 0
    # The work runs in one of the executor's threads, never on the event loop.
    assert (await pool.run(lambda: threading.current_thread().name)).startswith("model-")


async def test_a_cancelled_caller_takes_its_job_out_of_the_line(pool: ModelExecutor) -> None:
    log = Log()
    blocked = asyncio.create_task(pool.run(log.blocker, owner="a"))
    await asyncio.to_thread(log.started.wait, 5)
    doomed = asyncio.create_task(pool.run(log.job("doomed"), owner="b"))
    await until(lambda: pool.waiting == 1)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert pool.waiting == 0
    log.gate.set()
    await blocked
    assert await pool.run(log.job("after"), owner="b") == "after"
    assert log.ran == ["blocker", "after"]


async def test_a_newer_interim_replaces_the_queued_one(pool: ModelExecutor) -> None:
    log = Log()
    blocked = asyncio.create_task(pool.run(log.blocker, owner="a"))
    await asyncio.to_thread(log.started.wait, 5)
    older = asyncio.create_task(pool.run(log.job("interim1"), owner="b", droppable=True))
    await until(lambda: pool.waiting == 1)
    newer = asyncio.create_task(pool.run(log.job("interim2"), owner="b", droppable=True))
    with pytest.raises(Skipped):
        await older
    log.gate.set()
    assert await newer == "interim2"
    await blocked
    assert log.ran == ["blocker", "interim2"]


async def test_a_full_line_skips_interims_and_holds_finals(pool: ModelExecutor) -> None:
    log = Log()
    blocked = asyncio.create_task(pool.run(log.blocker, owner="s"))
    await asyncio.to_thread(log.started.wait, 5)
    finals = [asyncio.create_task(pool.run(log.job(f"final{i}"), owner="s")) for i in range(6)]
    await until(lambda: pool.waiting == 6)  # 4 queued, 2 held
    with pytest.raises(Skipped):
        await pool.run(log.job("interim"), owner="s", droppable=True)
    log.gate.set()
    assert await asyncio.gather(*finals) == [f"final{i}" for i in range(6)]
    await blocked
    assert "interim" not in log.ran


async def test_work_outside_a_session_takes_turns_too(pool: ModelExecutor) -> None:
    log = Log()
    blocked = asyncio.create_task(pool.run(log.blocker, owner="flood"))
    await asyncio.to_thread(log.started.wait, 5)
    flood = [asyncio.create_task(pool.run(log.job(f"f{i}"), owner="flood")) for i in range(3)]
    await until(lambda: pool.waiting == 3)
    load = asyncio.create_task(pool.run(log.job("load model")))  # no owner, no session
    await until(lambda: pool.waiting == 4)
    log.gate.set()
    await asyncio.gather(blocked, load, *flood)
    assert log.ran[:2] == ["blocker", "load model"]


async def test_busy_sessions_share_the_threads_by_time() -> None:
    """Two sessions with backlogs, one with jobs ten times longer: over the run each gets
    about the same thread time, so the short jobs run about ten to one."""
    pool = ModelExecutor(workers=1)
    ran: list[str] = []
    gate = threading.Event()

    def work(name: str, seconds: float) -> None:
        assert gate.wait(10)
        time.sleep(seconds)
        ran.append(name)

    try:
        tasks = [asyncio.create_task(pool.run(work, "long", 0.05, owner="long"))]
        tasks += [asyncio.create_task(pool.run(work, "short", 0.005, owner="short"))]
        for _ in range(3):
            tasks.append(asyncio.create_task(pool.run(work, "long", 0.05, owner="long")))
        for _ in range(30):
            tasks.append(asyncio.create_task(pool.run(work, "short", 0.005, owner="short")))
        await until(lambda: pool.waiting >= 8)
        gate.set()
        await asyncio.gather(*tasks)
    finally:
        pool.shutdown()
    # After the first long job, about ten short ones run before the next long one.
    second_long = ran.index("long", 1)
    assert 4 <= ran[:second_long].count("short") <= 20, ran  # round-robin: 1


async def test_two_threads_serve_two_sessions_at_once() -> None:
    pool = ModelExecutor(workers=2)
    both = threading.Barrier(2, timeout=5)
    try:
        # Each job waits for the other: only two threads running at once get past it.
        results = await asyncio.gather(
            pool.run(both.wait, owner="a"), pool.run(both.wait, owner="b")
        )
        assert sorted(results) == [0, 1]
    finally:
        pool.shutdown()


async def test_shutdown_cancels_what_waits_and_refuses_more() -> None:
    pool = ModelExecutor(workers=1)
    log = Log()
    blocked = asyncio.create_task(pool.run(log.blocker, owner="a"))
    await asyncio.to_thread(log.started.wait, 5)
    waiting = asyncio.create_task(pool.run(log.job("never"), owner="b"))
    await until(lambda: pool.waiting == 1)
    pool.shutdown()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(RuntimeError):
        await pool.run(log.job("late"))
    log.gate.set()
    assert await blocked == "blocker"  # what was running finishes
    assert "never" not in log.ran

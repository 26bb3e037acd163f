"""The executor for CPU-heavy model work (Whisper, Piper), shared fairly by the sessions.

The event loop never runs inference itself: `run` hands a job to one of `workers`
threads and awaits its result. Jobs are scheduled fairly (`pipelines.fair_queue`): each
owner, a session, has its own FIFO, and a free thread takes the next job of the session
that has used the model threads least lately (ties in round-robin order). So one session's
backlog (a client sending audio as fast as it can) never delays another session's turn by
more than the jobs already running, and sessions that all have work share the threads by
time.

The owner of a job is the session whose context it runs in: a Session sets `work_owner`
when it is entered, and the tasks it (and its transport) starts inherit it, as they do the
logging ids. `owner=` names it explicitly. Work outside a session (loading a model) is
keyed by its stage, so it takes turns with the sessions too.

Bounded per owner (`max_queued`, with the overflow rule of `FairQueue`): a droppable job
(an interim transcript) is replaced by the owner's next one or refused when the owner's
line is full, and its caller gets `Skipped`; other jobs are never dropped, they wait.
Cancelling the awaiting coroutine takes its job out of the line; a job already running
finishes (native inference cannot be interrupted) and its result is dropped.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Hashable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from pipelines.fair_queue import FairQueue

T = TypeVar("T")

#: The session that model work started in this context is done for (None: no session).
work_owner: ContextVar[str | None] = ContextVar("work_owner", default=None)


class Skipped(Exception):
    """A droppable job was not run: a newer one of its owner replaced it, or its owner's
    line was full."""


@dataclass(eq=False, slots=True)
class _Job:
    fn: Callable[..., Any]
    args: tuple[object, ...]
    stage: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class ModelExecutor:
    def __init__(self, workers: int = 2, max_queued: int = 8) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.busy_seconds = 0.0
        #: Told (on the event loop) how long each piece of work took, by stage.
        self.on_work: Callable[[str, float], None] | None = None
        self._queue: FairQueue[Hashable, _Job] = FairQueue(max_queued)
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False

    async def run(
        self,
        fn: Callable[..., T],
        *args: object,
        stage: str = "model",
        owner: str | None = None,
        droppable: bool = False,
    ) -> T:
        """Run fn(*args) in a worker thread, in its owner's turn (`owner`, else the
        session of this context). `droppable`: may be skipped (raises `Skipped`)."""
        loop = asyncio.get_running_loop()
        owner = owner if owner is not None else work_owner.get()
        key: Hashable = ("session", owner) if owner is not None else ("stage", stage)
        job = _Job(fn, args, stage, loop, loop.create_future())
        with self._cond:
            if self._closed:
                raise RuntimeError("the model executor is shut down")
            self._start_threads()
            accepted, dropped = self._queue.put(key, job, droppable=droppable)
            if accepted:
                self._cond.notify()
        for old in dropped:
            _resolve(old, Skipped)
        if not accepted:
            raise Skipped
        try:
            return await job.future
        except asyncio.CancelledError:
            with self._cond:
                self._queue.remove(key, job)
            raise

    def shutdown(self) -> None:
        """Stop taking work; queued jobs are cancelled, running ones finish."""
        with self._cond:
            self._closed = True
            jobs = self._queue.drain()
            self._cond.notify_all()
        for job in jobs:
            _resolve(job, None)

    @property
    def waiting(self) -> int:
        """Jobs queued or held, not yet running."""
        with self._cond:
            return len(self._queue)

    def _start_threads(self) -> None:
        while len(self._threads) < self.workers:
            thread = threading.Thread(
                target=self._work, name=f"model-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._closed and not len(self._queue):
                    cond.wait()
                if self._closed:
                    return
                taken = self._queue.pop(time.monotonic())
            assert taken is not None
            key, job = taken
            if job.future.cancelled():  # its caller gave up just before we took it
                continue
            t0 = time.perf_counter()
            try:
                result, error = job.fn(*job.args), None
            except BaseException as exc:  # handed to the caller, like a thread pool does
                result, error = None, exc
            seconds = time.perf_counter() - t0
            with cond:
                self._queue.charge(key, seconds, time.monotonic())
            try:
                job.loop.call_soon_threadsafe(self._settle, job, result, error, seconds)
            except RuntimeError:  # its event loop is closed: nobody is waiting
                pass

    def _settle(self, job: _Job, result: Any, error: BaseException | None, seconds: float) -> None:
        self.busy_seconds += seconds
        if self.on_work is not None:
            self.on_work(job.stage, seconds)
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)


def _resolve(job: _Job, error: type[BaseException] | None) -> None:
    """Fail (`error`) or cancel (None) a job that will not run, from any thread."""

    def settle() -> None:
        if not job.future.done():
            if error is None:
                job.future.cancel()
            else:
                job.future.set_exception(error())

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass

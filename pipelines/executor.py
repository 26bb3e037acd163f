"""A bounded executor for CPU-heavy model work (Whisper, Piper, embeddings).

The event loop never runs inference itself. Submissions beyond the queue bound wait
(back-pressure) instead of piling up without limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class ModelExecutor:
    def __init__(self, workers: int = 2, queue_per_worker: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="model")
        self._slots = asyncio.Semaphore(workers * queue_per_worker)
        self.workers = workers
        self.busy_seconds = 0.0
        #: Told (on the event loop) how long each piece of work took, by stage.
        self.on_work: Callable[[str, float], None] | None = None

    async def run(self, fn: Callable[..., T], *args: object, stage: str = "model") -> T:
        """Run fn(*args) in a worker thread. Cancelling the caller abandons the result;
        the thread finishes its current call (native inference cannot be interrupted)."""
        async with self._slots:
            loop = asyncio.get_running_loop()
            result, seconds = await loop.run_in_executor(self._pool, _timed, fn, args)
        self.busy_seconds += seconds
        if self.on_work is not None:
            self.on_work(stage, seconds)
        return result

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _timed(fn: Callable[..., T], args: tuple[object, ...]) -> tuple[T, float]:
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0

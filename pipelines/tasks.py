"""The tasks of one conversation: all in one TaskGroup, none outliving it.

`open()` is the group's `async with`: leaving it cancels every task still running and
waits for them, so a hang-up or a shutdown leaves nothing behind. Each task is guarded:
a failed turn reports an `Error` event to the client and the conversation goes on, since
one provider outage must not end the call (nor, through the TaskGroup, cancel its
siblings).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from pipelines import events as ev
from pipelines.outbox import Outbox
from pipelines.providers import ProviderError

log = logging.getLogger(__name__)


class TaskScope:
    def __init__(self, session_id: str, outbox: Outbox) -> None:
        self._session_id = session_id
        self._outbox = outbox
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[TaskScope]:
        """Accept tasks until the block is left; then cancel what still runs and wait."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            try:
                yield self
            finally:
                for task in list(self._tasks):
                    task.cancel()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[None]:
        assert self._group is not None, "use the session as `async with session:`"
        task = self._group.create_task(self._guard(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A task cancelled before it ran never awaited `coro`: close it (nothing to unwind).
        task.add_done_callback(lambda _: coro.close())
        return task

    async def _guard(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except ProviderError as exc:  # every provider of a stage failed: say which
            log.warning("turn failed: %s", exc, extra={"session_id": self._session_id})
            self._outbox.emit(
                ev.Error("provider_unavailable", f"{exc.provider} is unavailable ({exc.kind})")
            )
        except Exception as exc:  # one failed turn must not end the conversation
            log.exception("session task failed", extra={"session_id": self._session_id})
            self._outbox.emit(ev.Error("internal", f"this turn failed: {type(exc).__name__}"))

"""The task scope of a session: a failed task is reported and the others go on; leaving
the scope leaves no task running and no coroutine un-awaited."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from pipelines import events as ev
from pipelines.outbox import Outbox
from pipelines.providers import ProviderError
from pipelines.tasks import TaskScope


async def test_a_failed_task_is_reported_and_its_siblings_go_on():
    outbox = Outbox()
    scope = TaskScope("s1", outbox)
    done = asyncio.Event()

    async def boom() -> None:
        raise RuntimeError("model exploded")

    async def outage() -> None:
        raise ProviderError("anthropic", "timeout", "no answer")

    async def sibling() -> None:
        await asyncio.sleep(0.01)
        done.set()

    async with scope.open():
        scope.spawn(boom())
        scope.spawn(outage())
        scope.spawn(sibling())
        await asyncio.wait_for(done.wait(), 1)
    errors = [await outbox.get(), await outbox.get()]
    assert {(e.code, e.message) for e in errors if isinstance(e, ev.Error)} == {
        ("internal", "this turn failed: RuntimeError"),
        ("provider_unavailable", "anthropic is unavailable (timeout)"),
    }


async def test_leaving_cancels_running_tasks_and_closes_ones_that_never_ran():
    before = asyncio.all_tasks()
    scope = TaskScope("s1", Outbox())
    cancelled = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    never_ran = forever()
    async with scope.open():
        scope.spawn(forever())
        await asyncio.sleep(0)
        scope.spawn(never_ran)  # left before the loop ever ran it
    assert cancelled == [True]
    assert inspect.getcoroutinestate(never_ran) == inspect.CORO_CLOSED
    assert asyncio.all_tasks() - before == set()


def test_no_task_before_the_scope_is_open():
    scope = TaskScope("s1", Outbox())
    coro = asyncio.sleep(0)
    with pytest.raises(AssertionError, match="async with session"):
        scope.spawn(coro)
    coro.close()

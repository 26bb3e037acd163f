"""MemorySessionStore: TTL refreshed by activity, lazy and swept expiry, bounds."""

from __future__ import annotations

from pipelines.ports import Exchange
from server.storage.memory import MemorySessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ex(i: int) -> Exchange:
    return Exchange(user=f"u{i}", agent=f"a{i}", timestamp=float(i))


async def test_context_is_trimmed_to_max_and_oldest_first() -> None:
    store = MemorySessionStore(ttl_seconds=60, max_exchanges=3, clock=Clock())
    for i in range(5):
        await store.append_exchange("s1", ex(i))
    assert [e.user for e in await store.get_context("s1")] == ["u2", "u3", "u4"]
    assert await store.get_context("other") == []
    info = await store.info("s1")
    assert info is not None and info["exchange_count"] == 5


async def test_ttl_expires_idle_sessions_and_activity_refreshes_it() -> None:
    clock = Clock()
    store = MemorySessionStore(ttl_seconds=60, max_exchanges=5, clock=clock)
    await store.append_exchange("a", ex(1))
    await store.append_exchange("b", ex(1))
    clock.now += 50
    await store.touch("a")  # a refreshed at t+50, b not
    clock.now += 20  # b idle 70 s, a idle 20 s
    assert await store.count_active() == 1
    assert await store.get_context("b") == []
    assert [e.user for e in await store.get_context("a")] == ["u1"]
    clock.now += 60
    assert await store.get_context("a") == []
    assert await store.count_active() == 0


async def test_sweep_evicts_expired_sessions_without_being_asked_for_them() -> None:
    clock = Clock()
    store = MemorySessionStore(ttl_seconds=10, max_exchanges=2, clock=clock)
    for i in range(100):
        await store.append_exchange(f"s{i}", ex(i))
    clock.now += 11
    await store.append_exchange("fresh", ex(0))  # any write sweeps the expired front
    assert len(store._sessions) == 1


async def test_session_count_is_bounded() -> None:
    store = MemorySessionStore(ttl_seconds=60, max_exchanges=2, clock=Clock(), max_sessions=10)
    for i in range(25):
        await store.append_exchange(f"s{i}", ex(i))
    assert await store.count_active() == 10
    assert await store.get_context("s0") == []  # least recently active went first
    assert await store.get_context("s24") != []


async def test_ping_and_close() -> None:
    store = MemorySessionStore(ttl_seconds=60, max_exchanges=2)
    await store.append_exchange("x", ex(1))
    assert await store.ping() is True
    await store.close()
    assert await store.count_active() == 0


async def test_a_deleted_session_stays_deleted_for_late_appends() -> None:
    clock = [0.0]
    store = MemorySessionStore(ttl_seconds=60, max_exchanges=5, clock=lambda: clock[0])
    await store.append_exchange("gone", Exchange("secret", "noted", 1.0))
    await store.delete("gone")
    await store.append_exchange("gone", Exchange("another secret", "noted", 2.0))
    await store.touch("gone")
    assert await store.get_context("gone") == [] and not await store.exists("gone")
    clock[0] = 61.0  # after the TTL the id is an ordinary unknown id again
    await store.append_exchange("gone", Exchange("new", "start", 3.0))
    assert [e.user for e in await store.get_context("gone")] == ["new"]

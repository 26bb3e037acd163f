"""A new transport is one file: this test defines one (in-memory, no sockets) and holds a
conversation through the server's session lifecycle, without touching production code.
It also checks what the lifecycle promises every transport: maintenance and capacity
refusal, the opened/closed counts, liveness, and that a failure on either side of the
connection ends every task of the conversation."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from pipelines import events as ev
from pipelines.registry import Providers
from pipelines.session import Session
from server.engine import Engine
from server.limits.policy import Limits
from server.limits.store import LocalStore
from server.liveness import CLOSE_NOT_READING, LivenessConfig, Traffic
from server.settings import Settings
from server.transports.base import (
    CLOSE_RATE_LIMITED,
    CLOSE_UNAVAILABLE,
    Admission,
    Opening,
    Refusal,
)
from tests.fakes_engine import DictStore, ListSink, ScriptedLLM, ScriptedSTT, ToneTTS

REPLY = "Spaced repetition works. What will you review first?"
QUIET = LivenessConfig(tick_s=60, idle_ping_s=60, idle_close_s=120, stall_s=60)


@dataclass(eq=False)
class MemoryTransport:
    """A transport whose 'wire' is two asyncio queues: the test is the peer."""

    session_id: str
    config: dict[str, Any] = field(default_factory=dict)
    liveness: LivenessConfig = QUIET
    kind: str = "memory"
    client: str = "192.0.2.1"
    address_limited: bool = True
    per_call: bool = False
    traffic: Traffic = field(default_factory=Traffic)
    inbox: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    received: asyncio.Queue[ev.Event] = field(default_factory=asyncio.Queue)
    refused: Refusal | None = None
    close_code: int | None = None
    greeted: str = ""
    pings: int = 0
    aborted: bool = False
    fail_on_send: bool = False

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    async def accept(self) -> Opening | None:
        return Opening(self.session_id, self.config, per_call=self.per_call)

    async def refuse(self, refusal: Refusal) -> None:
        self.refused = refusal
        await self.close(refusal.code, refusal.reason)

    async def opened(self, session: Session, admission: Admission) -> None:
        self.greeted = session.id

    async def receive(self, session: Session) -> None:
        while True:
            kind, value = await self.inbox.get()
            self.traffic.rx += 1
            if kind == "text":
                session.submit_text(value)
            elif kind == "talk_start":
                session.talk_start()
            elif kind == "audio":
                session.feed_audio(value)
            elif kind == "talk_end":
                session.talk_end()
            elif kind == "hang_up":
                return

    async def send(self, event: ev.Event) -> None:
        if self.fail_on_send:
            raise ValueError("the wire broke")
        await self.received.put(event)

    async def ping(self) -> None:
        self.pings += 1

    async def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self.inbox.put_nowait(("hang_up", None))

    def abort(self) -> None:
        self.aborted = True


class CountingGate:
    def __init__(self) -> None:
        self.maintenance = False
        self.opened = 0
        self.closed = 0

    def refusal(self) -> str | None:
        return "maintenance" if self.maintenance else None

    def session_opened(self) -> None:
        self.opened += 1

    def session_closed(self) -> None:
        self.closed += 1


@pytest.fixture
async def world(tmp_path):
    settings = Settings.from_env({}, max_sessions=1, database_path=str(tmp_path / "c.db"))
    store, sink, gate = DictStore(), ListSink(), CountingGate()
    stt = ScriptedSTT(["tell me about spaced repetition"], interim_every=5)
    providers = Providers(stt=stt, llm=ScriptedLLM(REPLY), tts=ToneTTS(0.2))
    engine = Engine(settings, store, sink, providers=providers, gate=gate, watcher=gate)
    try:
        yield engine, gate, store, sink
    finally:
        await engine.close()


async def until(transport: MemoryTransport, kind: type[ev.Event]) -> list[ev.Event]:
    got: list[ev.Event] = []
    async with asyncio.timeout(5):
        while not isinstance(got[-1:] and got[-1], kind):
            got.append(await transport.received.get())
    return got


async def test_a_voice_and_a_text_turn_through_a_transport_defined_in_a_test(world) -> None:
    engine, gate, store, sink = world
    peer = MemoryTransport("mem-1", {"mode": "push_to_talk"})
    serving = asyncio.create_task(engine.lifecycle.serve(peer))

    peer.inbox.put_nowait(("talk_start", None))
    for _ in range(25):  # half a second of 16 kHz PCM16 in 20 ms frames
        peer.inbox.put_nowait(("audio", b"\x01\x02" * 320))
    peer.inbox.put_nowait(("talk_end", None))
    voice_turn = await until(peer, ev.AudioEnd)
    finals = [e for e in voice_turn if isinstance(e, ev.Transcript) and e.final]
    assert [e.text for e in finals] == ["tell me about spaced repetition"]
    done = next(e for e in voice_turn if isinstance(e, ev.ResponseDone))
    assert done.text == REPLY
    assert sum(len(e.pcm) for e in voice_turn if isinstance(e, ev.AudioFrame)) > 0

    async with asyncio.timeout(5):  # recorded once its audio has played
        while not store.data.get("mem-1"):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    peer.inbox.put_nowait(("text", "and interleaving?"))
    text_turn = await until(peer, ev.ResponseDone)
    assert text_turn[0] == ev.Transcript(2, "and interleaving?", True)

    assert peer.greeted == "mem-1" and gate.opened == 1 and gate.closed == 0
    assert engine.lifecycle.sessions and peer in engine.lifecycle.transports
    peer.inbox.put_nowait(("hang_up", None))
    async with asyncio.timeout(5):
        await serving
    assert not engine.lifecycle.sessions and not engine.lifecycle.transports
    assert gate.closed == 1
    assert [ex.user for ex in store.data["mem-1"]] == [
        "tell me about spaced repetition",
        "and interleaving?",
    ]
    assert len(sink.captures) == 2
    assert peer.traffic.tx > 0 and peer.traffic.rx >= 28


async def test_maintenance_refuses_before_a_session_exists(world) -> None:
    engine, gate, _, _ = world
    gate.maintenance = True
    peer = MemoryTransport("mem-2")
    async with asyncio.timeout(5):
        await engine.lifecycle.serve(peer)
    assert peer.refused == Refusal("maintenance", CLOSE_UNAVAILABLE, "unavailable")
    assert peer.close_code == CLOSE_UNAVAILABLE and peer.greeted == ""
    assert gate.opened == 0 and not engine.lifecycle.sessions


async def test_a_full_server_refuses_the_next_caller_and_admits_after_a_hang_up(world) -> None:
    engine, gate, _, _ = world  # MAX_SESSIONS=1
    first = MemoryTransport("mem-3")
    serving = asyncio.create_task(engine.lifecycle.serve(first))
    first.inbox.put_nowait(("text", "hello"))
    await until(first, ev.ResponseDone)

    second = MemoryTransport("mem-4")
    async with asyncio.timeout(5):
        await engine.lifecycle.serve(second)
    assert second.refused == Refusal("server full", CLOSE_UNAVAILABLE, "unavailable")
    assert second.greeted == ""

    first.inbox.put_nowait(("hang_up", None))
    await serving
    third = MemoryTransport("mem-5")
    serving = asyncio.create_task(engine.lifecycle.serve(third))
    third.inbox.put_nowait(("text", "back again"))
    await until(third, ev.ResponseDone)
    third.inbox.put_nowait(("hang_up", None))
    await serving
    assert third.refused is None and gate.opened == 2 and gate.closed == 2


async def test_a_failing_send_ends_every_task_of_the_conversation(world) -> None:
    engine, gate, _, _ = world
    before = asyncio.all_tasks()
    peer = MemoryTransport("mem-6", fail_on_send=True)
    serving = asyncio.create_task(engine.lifecycle.serve(peer))
    peer.inbox.put_nowait(("text", "this reply cannot be sent"))
    async with asyncio.timeout(5):
        await serving  # the failure is logged, not raised into the server
    assert gate.closed == 1 and not engine.lifecycle.sessions
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()


async def test_a_silent_peer_is_pinged_then_closed_by_the_shared_liveness_policy(world) -> None:
    engine, _, _, _ = world
    fast = LivenessConfig(tick_s=0.05, idle_ping_s=0.2, idle_close_s=0.5, stall_s=5)
    peer = MemoryTransport("mem-7", liveness=fast)
    async with asyncio.timeout(5):
        await engine.lifecycle.serve(peer)
    assert peer.pings == 1 and peer.close_code == CLOSE_NOT_READING
    assert not engine.lifecycle.sessions


async def test_shutdown_closes_every_live_transport_with_1001(world) -> None:
    engine, _, _, _ = world
    peer = MemoryTransport("mem-8")
    serving = asyncio.create_task(engine.lifecycle.serve(peer))
    peer.inbox.put_nowait(("text", "hello"))
    await until(peer, ev.ResponseDone)
    await engine.lifecycle.close_all()
    async with asyncio.timeout(5):
        await serving
    assert peer.close_code == 1001 and not engine.lifecycle.transports


async def test_capacity_counts_connections_still_being_admitted(tmp_path) -> None:
    """Two callers whose credentials take a while to check, one slot: one gets in."""

    class SlowAuthority:
        async def admit(self, session_id: str, credential: str | None, caller: str | None):
            await asyncio.sleep(0.1)
            return Admission(f"learner-of-{session_id}")

    settings = Settings.from_env({}, max_sessions=1, database_path=str(tmp_path / "c.db"))
    providers = Providers(stt=ScriptedSTT([]), llm=ScriptedLLM(REPLY), tts=ToneTTS(0.2))
    engine = Engine(
        settings, DictStore(), ListSink(), providers=providers, authority=SlowAuthority()
    )
    try:
        one, two = MemoryTransport("slow-1"), MemoryTransport("slow-2")
        serving = [asyncio.create_task(engine.lifecycle.serve(t)) for t in (one, two)]
        await asyncio.sleep(0.3)
        admitted = [t for t in (one, two) if t.greeted]
        refused = [t for t in (one, two) if t.refused is not None]
        assert len(admitted) == 1 and len(refused) == 1
        assert refused[0].refused == Refusal("server full", CLOSE_UNAVAILABLE, "unavailable")
        assert [s.learner_id for s in engine.lifecycle.sessions] == [
            f"learner-of-{admitted[0].session_id}"
        ]
        admitted[0].inbox.put_nowait(("hang_up", None))
        await asyncio.gather(*serving)
    finally:
        await engine.close()


async def test_per_address_and_per_learner_limits_refuse_with_4429_and_free_on_hang_up(
    tmp_path,
) -> None:
    settings = Settings.from_env(
        {"MAX_SOCKETS_PER_ADDRESS": "2", "MAX_SOCKETS_PER_LEARNER": "3"},
        database_path=str(tmp_path / "c.db"),
    )
    refused: list[str] = []
    limits = Limits(settings, LocalStore(), refused.append)
    providers = Providers(stt=ScriptedSTT(["hi"]), llm=ScriptedLLM(REPLY), tts=ToneTTS(0.1))
    engine = Engine(settings, DictStore(), ListSink(), providers=providers, limits=limits)
    try:
        peers = [MemoryTransport(f"a-{i}", client="198.51.100.7") for i in range(3)]
        serving = [asyncio.create_task(engine.lifecycle.serve(p)) for p in peers[:2]]
        for peer in peers[:2]:
            peer.inbox.put_nowait(("text", "hello"))
            await until(peer, ev.ResponseDone)
        async with asyncio.timeout(5):
            await engine.lifecycle.serve(peers[2])  # a third from the same address
        assert peers[2].refused is not None and peers[2].refused.code == CLOSE_RATE_LIMITED
        assert peers[2].refused.error == "rate_limited" and peers[2].greeted == ""
        assert refused == ["sockets_per_address"]

        # Another address is admitted; then the one learner ("local") is at its limit of 3.
        other = MemoryTransport("b-1", client="203.0.113.9")
        serving.append(asyncio.create_task(engine.lifecycle.serve(other)))
        other.inbox.put_nowait(("text", "hello"))
        await until(other, ev.ResponseDone)
        fourth = MemoryTransport("c-1", client="203.0.113.10")
        async with asyncio.timeout(5):
            await engine.lifecycle.serve(fourth)
        assert fourth.refused is not None and fourth.refused.code == CLOSE_RATE_LIMITED
        assert refused == ["sockets_per_address", "sockets_per_learner"]

        # A phone call proven by its handshake (per_call) gives its address's place back:
        # Twilio's few addresses carry every call.
        for peer, task in ((peers[0], serving[0]), (other, serving[2])):
            peer.inbox.put_nowait(("hang_up", None))
            await task
        phone = MemoryTransport("p-1", client="198.51.100.7", address_limited=False, per_call=True)
        phone_serving = asyncio.create_task(engine.lifecycle.serve(phone))
        phone.inbox.put_nowait(("text", "hello"))
        await until(phone, ev.ResponseDone)
        assert phone.refused is None

        # ... so the address's second place is free while the call goes on.
        again = MemoryTransport("a-9", client="198.51.100.7")
        again_serving = asyncio.create_task(engine.lifecycle.serve(again))
        again.inbox.put_nowait(("text", "back"))
        await until(again, ev.ResponseDone)
        assert again.refused is None
        for peer in (peers[1], phone, again):
            peer.inbox.put_nowait(("hang_up", None))
        await asyncio.gather(serving[1], phone_serving, again_serving)
        assert not engine.lifecycle.sessions
    finally:
        await engine.close()

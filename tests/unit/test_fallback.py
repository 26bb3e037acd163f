"""The fallback engine on its own, with scripted providers: which member is called, how
often, what reaches the caller, what the breakers and the observer are told, and when the
timeouts fire. (The chains over the real adapters are tested against the fake servers in
tests/integration/test_providers_*.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import pytest

from pipelines import resilience as rz
from pipelines.chain_policy import ChainPolicy, Member, members_of
from pipelines.fallback import Abandoned, AllFailed, Fallback, Rules
from pipelines.providers import ProviderError
from tests.fakes.fixtures import RecordingObserver, collect

RULES = Rules(open_timeout=0.5, first_output=0.1, idle=0.1, retries=1)
POLICY = ChainPolicy(breaker_failures=3, breaker_cooldown=10.0)


@dataclass(frozen=True, slots=True)
class Call:
    """What one call to a scripted provider does: yield `items` (each after `delay`), then
    raise `fault` or hang, if told to."""

    items: tuple[str, ...] = ("ok",)
    delay: float = 0.0
    fault: ProviderError | None = None
    hang: bool = False


class Scripted:
    """A provider whose n-th call follows the n-th step of its script (the last step
    repeats)."""

    def __init__(self, name: str, *script: Call) -> None:
        self.name = name
        self.script = script or (Call((name,)),)
        self.calls = 0

    async def play(self) -> AsyncGenerator[str, None]:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        for item in step.items:
            await asyncio.sleep(step.delay)
            yield item
        if step.hang:
            await asyncio.sleep(3600)
        if step.fault is not None:
            raise step.fault


class Plays:
    """The source: a member's output is whatever its scripted provider plays."""

    async def open(self, member: Member) -> AsyncGenerator[str, None]:
        return member.provider.play()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def server(name: str) -> ProviderError:
    return rz.fault(name, rz.SERVER, "HTTP 500")


def engine(*providers: Scripted, clock: Clock | None = None) -> tuple[Fallback, RecordingObserver]:
    obs = RecordingObserver()
    members = members_of(providers, POLICY, clock or Clock())
    return Fallback("llm", members, obs), obs


async def test_the_first_member_serves_and_is_named_with_its_latency() -> None:
    a, b = Scripted("a", Call(("x", "y"), delay=0.03)), Scripted("b")
    fb, obs = engine(a, b)
    assert await collect(fb.run(Plays(), RULES)) == ["x", "y"]
    assert (a.calls, b.calls) == (1, 0)
    [(stage, provider, seconds)] = obs.latencies
    assert (stage, provider) == ("llm", "a") and 0.03 <= seconds < 0.1
    assert fb.members[0].breaker.failures == 0


async def test_a_member_whose_breaker_is_open_is_skipped_without_a_call() -> None:
    a, b = Scripted("a"), Scripted("b")
    fb, obs = engine(a, b)
    fb.members[0].breaker.record_failure(rz.AUTH, permanent=True)
    assert await collect(fb.run(Plays(), RULES)) == ["b"]
    assert a.calls == 0
    assert obs.errors == [] and obs.fallbacks == []
    assert [p for _, p, _ in obs.latencies] == ["b"]


async def test_a_transient_fault_before_output_is_retried_on_the_same_member() -> None:
    a, b = Scripted("a", Call((), fault=server("a")), Call(("again",))), Scripted("b")
    fb, obs = engine(a, b)
    assert await collect(fb.run(Plays(), RULES)) == ["again"]
    assert (a.calls, b.calls) == (2, 0)
    assert obs.errors == [("llm", "a", "server")] and obs.fallbacks == []
    assert fb.members[0].breaker.failures == 0  # the retry's success closed the count


async def test_retries_run_out_then_the_next_member_is_tried() -> None:
    a, b = Scripted("a", Call((), fault=server("a"))), Scripted("b")
    fb, obs = engine(a, b)
    assert await collect(fb.run(Plays(), dataclasses.replace(RULES, retries=2))) == ["b"]
    assert a.calls == 3
    assert obs.errors == [("llm", "a", "server")] * 3
    assert obs.fallbacks == [("llm", "a", "b")]


async def test_a_fault_after_output_ends_the_call_where_it_stopped() -> None:
    a = Scripted("a", Call(("So ", "the "), fault=rz.fault("a", rz.DROPPED, "reset")))
    b = Scripted("b")
    fb, obs = engine(a, b)
    assert await collect(fb.run(Plays(), RULES)) == ["So ", "the "]  # once, and no more
    assert (a.calls, b.calls) == (1, 0)
    assert obs.errors == [("llm", "a", "dropped")] and obs.fallbacks == []
    assert fb.members[0].breaker.failures == 1


async def test_a_permanent_fault_is_not_retried_and_opens_the_breaker() -> None:
    bad_key = rz.fault("a", rz.AUTH, "HTTP 401", permanent=True)
    a, b = Scripted("a", Call((), fault=bad_key)), Scripted("b")
    fb, obs = engine(a, b)
    assert await collect(fb.run(Plays(), RULES)) == ["b"]
    assert await collect(fb.run(Plays(), RULES)) == ["b"]
    assert a.calls == 1
    assert fb.members[0].breaker.state == "open"
    assert obs.errors == [("llm", "a", "auth")]
    # Whatever its kind: a provider that calls a server fault permanent is not asked twice.
    final = rz.fault("a", rz.SERVER, "HTTP 500", permanent=True)
    a2 = Scripted("a", Call((), fault=final))
    fb2, _ = engine(a2, Scripted("b"))
    assert await collect(fb2.run(Plays(), RULES)) == ["b"]
    assert a2.calls == 1


async def test_a_rate_limit_is_not_retried() -> None:
    limited = rz.fault("a", rz.RATE_LIMITED, "HTTP 429", retry_after=5.0)
    a, b = Scripted("a", Call((), fault=limited)), Scripted("b")
    fb, _ = engine(a, b)
    assert await collect(fb.run(Plays(), RULES)) == ["b"]
    assert a.calls == 1 and fb.members[0].breaker.status()["retry_in_s"] == 5.0


async def test_no_output_is_an_empty_fault_unless_silence_is_an_answer() -> None:
    a, b = Scripted("a", Call(())), Scripted("b")
    fb, obs = engine(a, b)
    assert await collect(fb.run(Plays(), RULES)) == ["b"]
    assert obs.errors == [("llm", "a", "empty")]
    a2 = Scripted("a", Call(()))
    fb2, obs2 = engine(a2, Scripted("b"))
    assert await collect(fb2.run(Plays(), dataclasses.replace(RULES, needs_output=False))) == []
    assert obs2.errors == [] and fb2.members[0].breaker.failures == 0


async def test_every_member_failing_raises_after_reporting_each_fallback() -> None:
    a, b = Scripted("a", Call((), hang=True)), Scripted("b", Call((), fault=server("b")))
    fb, obs = engine(a, b)
    with pytest.raises(AllFailed) as info:
        await collect(fb.run(Plays(), dataclasses.replace(RULES, retries=0)))
    assert info.value.kind == "unavailable" and info.value.provider == "llm"
    assert obs.errors == [("llm", "a", "timeout"), ("llm", "b", "server")]
    assert obs.fallbacks == [("llm", "a", "b")]
    assert obs.latencies == []


async def test_closing_the_call_releases_a_half_open_probe() -> None:
    clock = Clock()
    a = Scripted("a", Call(("one", "two"), delay=0.01))
    fb, _ = engine(a, Scripted("b"), clock=clock)
    breaker = fb.members[0].breaker
    breaker.record_failure(rz.AUTH, permanent=True)
    clock.now += POLICY.breaker_max_cooldown
    call = fb.run(Plays(), RULES)
    assert await anext(call) == "one"  # the probe is out
    assert not breaker.allow()  # one probe at a time
    await call.aclose()  # a barge-in: the probe proved nothing
    assert breaker.state == "half_open" and breaker.allow()


async def test_cancelling_the_call_before_output_releases_a_half_open_probe() -> None:
    clock = Clock()
    a = Scripted("a", Call(("late",), delay=0.05))
    fb, obs = engine(a, Scripted("b"), clock=clock)
    breaker = fb.members[0].breaker
    breaker.record_failure(rz.AUTH, permanent=True)
    clock.now += POLICY.breaker_max_cooldown
    task = asyncio.create_task(collect(fb.run(Plays(), RULES)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.allow()
    assert obs.errors == [] and breaker.failures == 1  # not charged for the cancellation


async def test_first_output_timeout_then_fallback_names_the_serving_member() -> None:
    a, b = Scripted("a", Call(("slow",), delay=0.3)), Scripted("b", Call(("fast",), delay=0.02))
    fb, obs = engine(a, b)
    assert await collect(fb.run(Plays(), RULES)) == ["fast"]
    assert a.calls == 1  # a timeout is not retried
    assert obs.errors == [("llm", "a", "timeout")]
    [(_, provider, seconds)] = obs.latencies
    assert provider == "b" and 0.02 <= seconds < 0.1  # b's own time, not the whole call's


async def test_the_last_usable_member_gets_the_last_resort_budget() -> None:
    # 0.2 s to the first output: over the 0.1 s budget, within 4x that for the last member.
    a = Scripted("a", Call(("slow a",), delay=0.2))
    b = Scripted("b", Call(("slow b",), delay=0.2))
    fb, obs = engine(a, b)
    assert await collect(fb.run(Plays(), RULES)) == ["slow b"]
    assert obs.errors == [("llm", "a", "timeout")]
    # With b's breaker open, a is the last usable member and gets the longer budget too.
    fb.members[1].breaker.record_failure(rz.AUTH, permanent=True)
    assert await collect(fb.run(Plays(), RULES)) == ["slow a"]


async def test_idle_timeout_between_outputs_ends_the_call() -> None:
    a = Scripted("a", Call(("first",), hang=True))
    fb, obs = engine(a, Scripted("b"))
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await collect(fb.run(Plays(), dataclasses.replace(RULES, idle=0.05))) == ["first"]
    assert loop.time() - start < 0.5
    assert obs.errors == [("llm", "a", "timeout")] and obs.fallbacks == []


async def test_open_timeout_is_a_fault_of_the_member() -> None:
    class SlowToOpen(Plays):
        async def open(self, member: Member) -> AsyncGenerator[str, None]:
            if member.name == "a":
                await asyncio.sleep(1)
            return await super().open(member)

    fb, obs = engine(Scripted("a"), Scripted("b"))
    rules = dataclasses.replace(RULES, open_timeout=0.05, retries=0)
    assert await collect(fb.run(SlowToOpen(), rules)) == ["b"]
    assert obs.errors == [("llm", "a", "timeout")]


async def test_hold_keeps_the_admission_and_first_skips_the_breaker() -> None:
    clock = Clock()
    a = Scripted("a")
    fb, obs = engine(a, Scripted("b"), clock=clock)
    breaker = fb.members[0].breaker
    breaker.record_failure(rz.AUTH, permanent=True)
    clock.now += POLICY.breaker_max_cooldown
    assert await collect(fb.run(Plays(), dataclasses.replace(RULES, hold=True))) == []
    assert a.calls == 0  # opened, nothing asked of it yet
    assert not breaker.allow()  # still out as the probe: no verdict yet
    assert await collect(fb.run(Plays(), RULES, first=fb.members[0])) == ["a"]
    assert breaker.state == "closed" and obs.errors == []


async def test_an_abandoned_call_is_not_the_members_fault() -> None:
    class Closed(Plays):
        async def open(self, member: Member) -> AsyncGenerator[str, None]:
            raise Abandoned

    fb, obs = engine(Scripted("a"), Scripted("b"))
    with pytest.raises(Abandoned):
        await collect(fb.run(Closed(), RULES))
    assert obs.errors == [] and fb.members[0].breaker.failures == 0

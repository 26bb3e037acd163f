"""The fallback engine: the rules of a provider chain (listed in `pipelines.chain`), carried
out once for every stage.

A call walks the chain's members in order until one serves it. The stage says only how to
reach a member for this call and what counts as output (a `Source`); the rest is here and
the same for speech-to-text, the language model and text-to-speech: skipping a member whose
breaker is open, retrying a transient fault on the same member before its first output,
falling back to the next member, never repeating output (after the first output a fault
ends the call where it stopped), the first-output and idle timeouts, the breaker
bookkeeping, and what the observer and the log are told.

The engine keeps no per-call state: one chain, and so one engine, serves every session of
the process. Which member served a call is told per call, to the observer
(`provider_latency`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from pipelines import resilience as rz
from pipelines.chain_policy import LAST_RESORT_FACTOR, Member
from pipelines.ports import SessionObserver
from pipelines.providers import ProviderError

log = logging.getLogger(__name__)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

#: Faults worth one more try on the same provider before moving on.
RETRYABLE = frozenset({rz.SERVER, rz.CONNECT, rz.DROPPED})


class Source(Protocol[T_co]):
    """A stage's side of one call."""

    async def open(self, member: Member) -> AsyncGenerator[T_co, None]:
        """Reach `member` and return its output for this call, yielding only what counts as
        output: each item is timed, and the first one commits the call to `member`. An
        exception raised here or by the generator is `member`'s fault."""
        ...


@dataclass(frozen=True, slots=True)
class Rules:
    """What one kind of call allows each member."""

    #: Seconds for `Source.open`. Streams that connect on their first read (LLM, TTS)
    #: spend their connect out of `first_output`.
    open_timeout: float
    #: Seconds from the start of a try to its first output (x LAST_RESORT_FACTOR for the
    #: last usable member).
    first_output: float
    #: Seconds between outputs.
    idle: float
    #: Further tries on the same member for a transient fault before its first output.
    retries: int
    #: A try that ends without output failed (`empty`); False where silence is an answer.
    needs_output: bool = True
    #: Stop once the member is open: it keeps its admission past its breaker, and its
    #: verdict comes with a later call that passes it as `first` (an STT stream is opened
    #: ahead of the utterance and judged by its final transcript).
    hold: bool = False


class AllFailed(ProviderError):
    """No member served the call, and nothing of it reached the caller."""

    def __init__(self, stage: str) -> None:
        super().__init__(stage, "unavailable", f"no {stage} provider answered")


class Abandoned(Exception):
    """Raised by a source when its call stopped mattering (the stream it serves was closed
    meanwhile): not the member's fault, so its breaker is released, not charged."""


@dataclass(slots=True, eq=False)
class _Attempt:
    member: Member
    first_output: float
    delivered: bool = False


class Fallback:
    """Runs one stage's calls over its members (see the module docstring)."""

    def __init__(self, stage: str, members: Sequence[Member], observer: SessionObserver) -> None:
        self.stage = stage
        self.members = tuple(members)
        self.reports = Reports(stage, observer)

    async def run(
        self, source: Source[T], rules: Rules, *, first: Member | None = None
    ) -> AsyncIterator[T]:
        """Yield the output of the first member that serves the call; raise `AllFailed` if
        none did. `first` is a member admitted by an earlier `hold` call: it is tried
        before the others without asking its breaker again."""
        order = self._order(first)
        previous: Member | None = None
        for i, member in enumerate(order):
            if member is not first and not member.breaker.allow():
                continue
            if previous is not None:
                self.reports.fell_back(previous, member)
            last = all(m.breaker.state == "open" for m in order[i + 1 :])
            budget = rules.first_output * (LAST_RESORT_FACTOR if last else 1.0)
            tries = 0
            while True:
                attempt = _Attempt(member, budget)
                outputs = self._attempt(source, rules, attempt)
                try:
                    async with contextlib.aclosing(outputs):
                        async for item in outputs:
                            yield item
                    return
                except Abandoned:
                    raise
                except Exception as exc:
                    err = self._charge(member, exc)
                    if attempt.delivered:
                        return  # never repeat output: the call ends where it stopped
                    if not self._may_retry(member, err, tries, rules):
                        break
                    tries += 1
            previous = member
        self.reports.exhausted()
        raise AllFailed(self.stage)

    def _order(self, first: Member | None) -> tuple[Member, ...]:
        if first is None:
            return self.members
        return (first, *(m for m in self.members if m is not first))

    async def _attempt(
        self, source: Source[T], rules: Rules, attempt: _Attempt
    ) -> AsyncGenerator[T, None]:
        """One try on one member: its output, timed, then its verdict for the breaker."""
        member = attempt.member
        started = time.perf_counter()
        try:
            async with asyncio.timeout(rules.open_timeout):
                opened = await source.open(member)
            async with contextlib.aclosing(opened) as outputs:
                if rules.hold:
                    return
                timeout = attempt.first_output
                while True:
                    try:
                        async with asyncio.timeout(timeout):
                            item = await anext(outputs)
                    except StopAsyncIteration:
                        break
                    if not attempt.delivered:
                        attempt.delivered = True
                        self.reports.served(member, time.perf_counter() - started)
                    timeout = rules.idle
                    yield item
        except (asyncio.CancelledError, GeneratorExit, Abandoned):
            member.breaker.release()  # given up by the caller (a barge-in): it proved nothing
            raise
        if not attempt.delivered and rules.needs_output:
            raise rz.fault(member.name, rz.EMPTY, "no output")
        member.breaker.record_success()

    def _charge(self, member: Member, exc: Exception) -> ProviderError:
        err = _as_provider_error(member, exc)
        member.breaker.record_failure(
            err.kind, permanent=err.permanent, retry_after=getattr(err, "retry_after", None)
        )
        self.reports.failed(member, err)
        return err

    @staticmethod
    def _may_retry(member: Member, err: ProviderError, tries: int, rules: Rules) -> bool:
        return (
            not err.permanent
            and err.kind in RETRYABLE
            and tries < rules.retries
            and member.breaker.state == "closed"
        )


class Reports:
    """What the observer and the log hear about one stage's providers. Log lines carry the
    stage, provider and fault kind; fault messages are built from status codes and error
    types only (see `pipelines.resilience`), so no key can reach them."""

    def __init__(self, stage: str, observer: SessionObserver) -> None:
        self.stage = stage
        self.observer = observer

    def failed(self, member: Member, err: ProviderError) -> None:
        state = member.breaker.state
        log.warning(
            "%s provider %s failed: %s (%s); breaker %s",
            self.stage, member.name, err.kind, _safe_detail(err), state,
            extra={"stage": self.stage, "provider": member.name, "fault": err.kind,
                   "permanent": err.permanent, "breaker": state},
        )  # fmt: skip
        self.observer.provider_error(self.stage, member.name, err.kind)

    def recovered(self, provider: str, kind: str) -> None:
        """A fault the provider got over by itself (a Deepgram reconnect)."""
        self.observer.provider_error(self.stage, provider, kind)

    def fell_back(self, src: Member, dst: Member) -> None:
        log.info(
            "%s falling back from %s to %s", self.stage, src.name, dst.name,
            extra={"stage": self.stage, "provider": src.name, "fallback": dst.name},
        )  # fmt: skip
        self.observer.provider_fallback(self.stage, src.name, dst.name)

    def served(self, member: Member, seconds: float) -> None:
        """`member` produced the call's first output after `seconds`: it serves the call."""
        self.observer.provider_latency(self.stage, member.name, seconds)

    def exhausted(self) -> None:
        log.error("every %s provider failed", self.stage, extra={"stage": self.stage})


def _as_provider_error(member: Member, exc: Exception) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, TimeoutError):
        return rz.fault(member.name, rz.TIMEOUT, "no answer in time")
    return rz.fault(member.name, rz.ERROR, type(exc).__name__)


def _safe_detail(err: ProviderError) -> str:
    # str(ProviderError) is "provider: kind: message"; adapters build messages from
    # status codes and error types only.
    return str(err).split(": ", 2)[-1]

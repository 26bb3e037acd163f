"""Provider chains: one object per stage that implements the stage's Protocol over an
ordered list of providers, with timeouts, a circuit breaker per provider and fallback.

The Session holds exactly one SpeechToText, LanguageModel and TextToSpeech; with cloud
providers configured each of them is one of these chains. The rules, the same for every
stage:

- a provider gets `first_byte_timeout` to produce its first output (connect included),
  then `idle_timeout` between chunks;
- a provider whose breaker is open is skipped without a call;
- before any output reached the caller, a transient fault is retried on the same provider
  (`retries` times) and then the next provider is tried, within the same turn;
- after output reached the caller nothing is retried (that would repeat half an answer):
  the reply ends cleanly where it stopped and the fault is reported;
- permanent faults (bad key, bad request) open the breaker at once and are not retried;
- every fault goes to the observer (`provider_error`, `provider_fallback`) and to the log
  with the stage, provider and fault kind, never with a key;
- if every language model fails, the user hears one short apology instead of silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self

from audio.resample import StreamResampler
from pipelines import resilience as rz
from pipelines.ports import Exchange, NullObserver, SessionObserver
from pipelines.prompts import APOLOGY
from pipelines.providers import ProviderError

log = logging.getLogger(__name__)

#: How much longer the last provider of a chain may take (see `first_byte_timeout`).
LAST_RESORT_FACTOR = 4.0
#: Faults worth one more try on the same provider before moving on.
_RETRYABLE = frozenset({rz.SERVER, rz.CONNECT, rz.DROPPED})


@dataclass(frozen=True, slots=True)
class ChainPolicy:
    first_byte_timeout: float = 2.5
    idle_timeout: float = 10.0
    #: End of utterance -> final transcript, per STT provider.
    finalize_timeout: float = 2.5
    #: Opening a streaming STT connection.
    open_timeout: float = 2.0
    retries: int = 1
    breaker_failures: int = 3
    breaker_cooldown: float = 30.0
    breaker_max_cooldown: float = 300.0


@dataclass(slots=True, eq=False)
class Member:
    provider: Any
    breaker: rz.CircuitBreaker

    @property
    def name(self) -> str:
        return str(self.provider.name)


def as_provider_error(member: Member, exc: BaseException) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, TimeoutError):
        return rz.fault(member.name, rz.TIMEOUT, "no answer in time")
    return rz.fault(member.name, rz.ERROR, type(exc).__name__)


class _Chain:
    stage = ""

    def __init__(
        self,
        providers: Sequence[Any],
        policy: ChainPolicy | None = None,
        observer: SessionObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not providers:
            raise ValueError(f"{self.stage} chain needs at least one provider")
        self.policy = policy or ChainPolicy()
        p = self.policy
        self.members = [
            Member(prov, rz.CircuitBreaker(p.breaker_failures, p.breaker_cooldown,
                                           p.breaker_max_cooldown, clock))
            for prov in providers
        ]  # fmt: skip
        self.observer: SessionObserver = observer or NullObserver()
        #: The provider that served the last successful call (for per-provider metrics).
        self.last_provider = ""
        for m in self.members:
            if hasattr(m.provider, "on_fault"):
                # Faults a provider recovers from by itself (a Deepgram reconnect).
                m.provider.on_fault = self._recovered

    def _recovered(self, provider: str, kind: str) -> None:
        self.observer.provider_error(self.stage, provider, kind)

    @property
    def name(self) -> str:
        return self.last_provider or self.members[0].name

    def with_observer(self, observer: SessionObserver) -> Self:
        """A view reporting to another observer, sharing providers and breakers."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.observer = observer
        return view

    def status(self) -> list[dict[str, Any]]:
        """Breaker state per provider, in chain order, for the health endpoint."""
        return [{"provider": m.name, **m.breaker.status()} for m in self.members]

    async def warm_up(self) -> None:
        for m in self.members:
            warm = getattr(m.provider, "warm_up", None)
            if warm is not None:
                await warm()

    async def aclose(self) -> None:
        for m in self.members:
            close = getattr(m.provider, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    # ------------------------------------------------------------------ reporting
    def failed(self, member: Member, exc: BaseException) -> ProviderError:
        err = as_provider_error(member, exc)
        member.breaker.record_failure(
            err.kind, permanent=err.permanent, retry_after=getattr(err, "retry_after", None)
        )
        state = member.breaker.state
        log.warning(
            "%s provider %s failed: %s (%s); breaker %s",
            self.stage, member.name, err.kind, _safe_detail(err), state,
            extra={"stage": self.stage, "provider": member.name, "fault": err.kind,
                   "permanent": err.permanent, "breaker": state},
        )  # fmt: skip
        self.observer.provider_error(self.stage, member.name, err.kind)
        return err

    def first_output(self, member: Member, started: float) -> None:
        """A provider produced its first output: it serves this call. Its latency goes to
        the observer's optional `provider_latency(stage, provider, seconds)`."""
        self.last_provider = member.name
        report = getattr(self.observer, "provider_latency", None)
        if report is not None:
            report(self.stage, member.name, time.perf_counter() - started)

    def fell_back(self, src: Member, dst: Member) -> None:
        log.info(
            "%s falling back from %s to %s", self.stage, src.name, dst.name,
            extra={"stage": self.stage, "provider": src.name, "fallback": dst.name},
        )  # fmt: skip
        self.observer.provider_fallback(self.stage, src.name, dst.name)

    def first_byte_timeout(self, member: Member) -> float:
        """The policy's, or 4x as much for the last provider left: nothing comes after it,
        so giving up sooner would only turn a slow answer into none."""
        later = self.members[self.members.index(member) + 1 :]
        last = all(m.breaker.state == "open" for m in later)
        return self.policy.first_byte_timeout * (LAST_RESORT_FACTOR if last else 1.0)

    def should_retry(self, member: Member, err: ProviderError, attempt: int) -> bool:
        return (
            not err.permanent
            and err.kind in _RETRYABLE
            and attempt < self.policy.retries
            and member.breaker.state == "closed"
        )


def _safe_detail(err: ProviderError) -> str:
    # str(ProviderError) is "provider: kind: message"; adapters build messages from
    # status codes and error types only.
    return str(err).split(": ", 2)[-1]


async def _next(agen: AsyncIterator[Any], timeout: float) -> Any:
    async with asyncio.timeout(timeout):
        return await anext(agen)


class LLMChain(_Chain):
    stage = "llm"

    async def stream(self, user_text: str, history: Sequence[Exchange]) -> AsyncIterator[str]:
        previous: Member | None = None
        for member in self.members:
            if not member.breaker.allow():
                continue
            if previous is not None:
                self.fell_back(previous, member)
            attempt = 0
            while True:
                sent = False
                settled = False
                started = time.perf_counter()
                agen = member.provider.stream(user_text, history)
                try:
                    async with contextlib.aclosing(agen):
                        timeout = self.first_byte_timeout(member)
                        while True:
                            try:
                                delta = await _next(agen, timeout)
                            except StopAsyncIteration:
                                break
                            if not delta:
                                continue
                            timeout = self.policy.idle_timeout
                            if not sent:
                                self.first_output(member, started)
                            sent = True
                            yield delta
                    if not sent:
                        raise rz.fault(member.name, rz.EMPTY, "empty reply")
                    member.breaker.record_success()
                    settled = True
                    return
                except Exception as exc:
                    settled = True
                    err = self.failed(member, exc)
                    if sent:
                        return  # never repeat half an answer; the reply ends here
                    if self.should_retry(member, err, attempt):
                        attempt += 1
                        continue
                    previous = member
                    break
                finally:
                    if not settled:  # cancelled or closed by the consumer
                        member.breaker.release()
        log.error("every llm provider failed; apologising", extra={"stage": self.stage})
        self.last_provider = "apology"
        yield APOLOGY


class TTSChain(_Chain):
    stage = "tts"

    @property
    def sample_rate(self) -> int:
        """The rate of everything this chain yields: its first provider's native rate
        (audio from a fallback with another rate is resampled to it)."""
        return int(self.members[0].provider.sample_rate)

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        rate = self.sample_rate
        speakable = any(ch.isalnum() for ch in text)
        previous: Member | None = None
        for member in self.members:
            if not member.breaker.allow():
                continue
            if previous is not None:
                self.fell_back(previous, member)
            attempt = 0
            while True:
                sent = False
                settled = False
                conv = StreamResampler(int(member.provider.sample_rate), rate, quality="MQ")
                started = time.perf_counter()
                agen = member.provider.synthesize(text)
                try:
                    async with contextlib.aclosing(agen):
                        timeout = self.first_byte_timeout(member)
                        while True:
                            try:
                                chunk = await _next(agen, timeout)
                            except StopAsyncIteration:
                                break
                            timeout = self.policy.idle_timeout
                            pcm = conv.process(chunk)
                            if pcm:
                                if not sent:
                                    self.first_output(member, started)
                                sent = True
                                yield pcm
                    tail = conv.flush()
                    if tail:
                        sent = True
                        yield tail
                    if not sent and speakable:
                        raise rz.fault(member.name, rz.EMPTY, "no audio")
                    member.breaker.record_success()
                    settled = True
                    return
                except Exception as exc:
                    settled = True
                    err = self.failed(member, exc)
                    if sent:
                        return  # the rest of this sentence is lost; never say it twice
                    if self.should_retry(member, err, attempt):
                        attempt += 1
                        continue
                    previous = member
                    break
                finally:
                    if not settled:
                        member.breaker.release()
        log.error("every tts provider failed for a sentence", extra={"stage": self.stage})


class STTChain(_Chain):
    stage = "stt"

    async def open(self, on_interim: Callable[[str], None]) -> Any:
        from pipelines.chain_stt import ChainSTTStream

        stream = ChainSTTStream(self, on_interim)
        await stream.start()
        return stream

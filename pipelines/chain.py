"""Provider chains: one object per stage that implements the stage's Protocol over an
ordered list of providers, with timeouts, a circuit breaker per provider and fallback.

The Session holds exactly one SpeechToText, LanguageModel and TextToSpeech; with cloud
providers configured each of them is one of these chains. The rules, the same for every
stage:

- a provider gets `first_byte_timeout` to produce its first output (connect included),
  then `idle_timeout` between outputs; the last usable provider gets `LAST_RESORT_FACTOR`
  times the first budget (nothing comes after it);
- a provider whose breaker is open is skipped without a call;
- before any output reached the caller, a transient fault is retried on the same provider
  (`retries` times; speech-to-text excepted, see `pipelines.chain_stt`) and then the next
  provider is tried, within the same turn;
- after output reached the caller nothing is retried (that would repeat half an answer):
  the reply ends cleanly where it stopped and the fault is reported;
- permanent faults (bad key, bad request) open the breaker at once and are not retried;
- every fault goes to the observer (`provider_error`, `provider_fallback`) and to the log
  with the stage, provider and fault kind, never with a key;
- if every language model fails, the user hears one short apology instead of silence.

The rules are carried out once, by `pipelines.fallback.Fallback`; each chain here says
only how to call one of its providers and what counts as output. A chain serves every
session of the process, so it keeps nothing about a single call: which provider served a
call goes to the observer (`provider_latency`) with that call.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from audio.resample import StreamResampler
from pipelines.chain_policy import LAST_RESORT_FACTOR, ChainPolicy, Member, members_of
from pipelines.chain_stt import ChainSTTStream
from pipelines.context_budget import fit_context
from pipelines.fallback import AllFailed, Fallback, Rules
from pipelines.ports import Exchange, NullObserver, SessionObserver
from pipelines.prompts import APOLOGY

__all__ = [
    "LAST_RESORT_FACTOR",
    "ChainPolicy",
    "LLMChain",
    "Member",
    "STTChain",
    "TTSChain",
]


class _Chain:
    """What every stage's chain has: its members in order, one fallback engine over them,
    and the health and life-cycle calls the registry makes."""

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
        self.members = members_of(providers, self.policy, clock)
        self.fallback = Fallback(self.stage, self.members, observer or NullObserver())
        p = self.policy
        self.rules = Rules(
            open_timeout=p.open_timeout,
            first_output=p.first_byte_timeout,
            idle=p.idle_timeout,
            retries=p.retries,
        )
        for m in self.members:
            if hasattr(m.provider, "on_fault"):
                # Faults a provider recovers from by itself (a Deepgram reconnect).
                m.provider.on_fault = self.fallback.reports.recovered

    @property
    def name(self) -> str:
        """The chain, by its providers in order (`chain:anthropic,openai`)."""
        return "chain:" + ",".join(m.name for m in self.members)

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


@dataclass(frozen=True, slots=True)
class _Reply:
    """One reply from a language model; its output is every non-empty text delta."""

    user_text: str
    history: Sequence[Exchange]

    async def open(self, member: Member) -> AsyncGenerator[str, None]:
        return self._deltas(member.provider)

    async def _deltas(self, provider: Any) -> AsyncGenerator[str, None]:
        async with contextlib.aclosing(provider.stream(self.user_text, self.history)) as agen:
            async for delta in agen:
                if delta:
                    yield delta


class LLMChain(_Chain):
    stage = "llm"

    async def stream(self, user_text: str, history: Sequence[Exchange]) -> AsyncIterator[str]:
        context = fit_context(history, user_text, self.policy.context_max_chars)
        reply = self.fallback.run(_Reply(user_text, context), self.rules)
        try:
            async with contextlib.aclosing(reply):  # a barge-in closes the provider's stream
                async for delta in reply:
                    yield delta
        except AllFailed:
            yield APOLOGY  # one short apology rather than silence

    def recap(self, history: Sequence[Exchange]) -> str:
        """The goodbye recap, from the first provider that writes one."""
        for m in self.members:
            recap = getattr(m.provider, "recap", None)
            if recap is not None:
                return str(recap(history))
        return "Goodbye!"


@dataclass(frozen=True, slots=True)
class _Speech:
    """One sentence spoken; its output is non-empty PCM at the chain's rate (a fallback
    with another native rate is resampled), its resampler's tail included."""

    text: str
    rate: int

    async def open(self, member: Member) -> AsyncGenerator[bytes, None]:
        return self._pcm(member.provider)

    async def _pcm(self, provider: Any) -> AsyncGenerator[bytes, None]:
        conv = StreamResampler(int(provider.sample_rate), self.rate, quality="MQ")
        async with contextlib.aclosing(provider.synthesize(self.text)) as agen:
            async for chunk in agen:
                if pcm := conv.process(chunk):
                    yield pcm
        if tail := conv.flush():
            yield tail


class TTSChain(_Chain):
    stage = "tts"

    @property
    def sample_rate(self) -> int:
        """The rate of everything this chain yields: its first provider's native rate
        (audio from a fallback with another rate is resampled to it)."""
        return int(self.members[0].provider.sample_rate)

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        # Speakable text that produced no audio is an `empty` fault; punctuation alone is not.
        rules = replace(self.rules, needs_output=any(ch.isalnum() for ch in text))
        speech = self.fallback.run(_Speech(text, self.sample_rate), rules)
        try:
            async with contextlib.aclosing(speech):  # a barge-in closes the provider's stream
                async for pcm in speech:
                    yield pcm
        except AllFailed:
            return  # this sentence has no audio; its text was already sent


class STTChain(_Chain):
    stage = "stt"

    async def open(self, on_interim: Callable[[str], None]) -> ChainSTTStream:
        stream = ChainSTTStream(self.fallback, self.policy, on_interim)
        await stream.start()
        return stream
